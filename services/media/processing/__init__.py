"""Work on stored media, off the request path.

The jobs claimed by compare-and-set with a lease and the renditions callers ask for (``jobs``),
image decoding and rendering, pure Pillow behind one gate (``imaging``), and facts and stills of
video, audio and PDF from sandboxed external tools (``av``). Transcoding will land here.

May import: ``core``, ``catalog`` (its public face), ``ingest.sniffing`` (media types),
``services.media.exceptions``, ``storage``. Never nameko, werkzeug or eventlet: CPU work goes
through the catalog's ``offload`` hook, tools run as subprocesses.
"""
