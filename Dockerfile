# The media service: Nameko RPC over RabbitMQ.
#
# The image does not migrate the database on start: docker-compose.yml runs a one-shot `migrate`
# service (`alembic upgrade head`) before `media`. Running the image on its own, do the same
# first, with the same DATABASE_URL and /app/var volume:
#   docker run --rm -v media-var:/app/var <image> alembic upgrade head
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# libmagic1 (and the magic database it depends on): content sniffing through python-magic.
# ffmpeg and poppler-utils: facts, poster frames and previews of video, audio and PDF (without
# them processing records that no facts could be extracted). psycopg2-binary and pillow bring
# their libraries in their wheels. Not version-pinned: the Debian point release and security
# updates come with them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 ffmpeg poppler-utils \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 media \
 && useradd --uid 10001 --gid media --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin media

WORKDIR /app

# Dependencies first, in a layer of their own: they are read from pyproject.toml's
# [project].dependencies, pinned by constraints.txt, so a change to the code does not reinstall
# them. setuptools stays <82 at runtime: nameko's CLI imports pkg_resources, which 82 removed.
COPY pyproject.toml constraints.txt ./
RUN pip install --no-cache-dir 'setuptools>=68,<82' \
 && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the service itself (the dependencies above are already satisfied, so this only builds and
# installs the media-service package), and what `nameko run` and `alembic` read from /app.
COPY services/ services/
COPY schemas/ schemas/
COPY storage/ storage/
COPY migrations/ migrations/
COPY alembic.ini config.yml ./
RUN pip install --no-cache-dir -c constraints.txt . \
 && rm -rf build ./*.egg-info \
 && python -W ignore -c "import pkg_resources, setuptools, magic, nameko.cli.main; \
assert int(setuptools.__version__.split('.')[0]) < 82, setuptools.__version__; \
assert magic.from_buffer(b'%PDF-1.4\n', mime=True) == 'application/pdf'"

# Writable state lives under /app/var, owned by the service user: without DATABASE_URL the
# database is SQLite at /app/var/media.db (config.yml's default, relative to /app), and the local
# storage backend keeps the bytes under STORAGE_ROOT.
RUN mkdir -p /app/var/storage \
 && chown -R media:media /app/var
VOLUME ["/app/var"]
ENV STORAGE_ROOT=/app/var/storage

# Numeric, so orchestrators can verify runAsNonRoot; it is the `media` user created above.
USER 10001:10001

# WEB_SERVER_ADDRESS defaults to 0.0.0.0:8000 (config.yml).
EXPOSE 8000

# /health answers 200 only when the database, the broker and the storage are all reachable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

# Exec form: nameko is PID 1 and gets SIGTERM itself, on which it stops gracefully (it finishes
# the workers in flight). It refuses to start without URL_SIGNING_KEY (or MEDIA_DEV_MODE=true).
CMD ["nameko", "run", "--config", "config.yml", "services.media"]
