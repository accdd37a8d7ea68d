"""What operators use to see and steer the service.

Read-only views over processing jobs, the outbox and upload sessions, one aggregate query each
(``views``, also behind the gauges of ``/metrics``), and the ``media-admin`` command line
(``admin``), which works on the database and storage with the service's own settings, or calls
the service over RPC where it owns the change.

May import: every package of the service (it sits on top), ``storage``. Only ``admin`` talks
to nameko, as a standalone RPC client.
"""
