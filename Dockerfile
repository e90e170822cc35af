# keydir in a container: a slim Python 3.11 image that runs `keydir serve` as an unprivileged
# user. Build and run (SQLite in the named volume keydir-data, migrated on start):
#
#   docker build -t keydir .
#   docker run -d --name keydir -p 8080:8080 -v keydir-data:/data keydir
#
# On PostgreSQL, migrate once (and after every upgrade) from the same image, then serve:
#
#   docker run --rm -e KEYDIR_DATABASE_URL=postgresql+psycopg://keydir:…@db:5432/keydir \
#       keydir keydir migrate
#   docker run -d -p 8080:8080 -e KEYDIR_DATABASE_URL=… -e KEYDIR_SMTP_HOST=… keydir
#
# Mail from dedicated processes instead of the servers (KEYDIR_DISPATCH_MAIL=false on them):
#
#   docker run -d -e KEYDIR_DATABASE_URL=… -e KEYDIR_SMTP_HOST=… keydir keydir worker
#
# Operator commands the same way, e.g. `docker exec keydir keydir stats` for the SQLite
# container above, or `docker run --rm -e KEYDIR_DATABASE_URL=… keydir keydir delete FPR`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed id, so that files in volumes keep one owner across image rebuilds.
RUN groupadd --system --gid 10001 keydir \
    && useradd --system --uid 10001 --gid keydir --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin keydir \
    && mkdir -p /data && chown keydir:keydir /data

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY service ./service
# The migrations ship inside the package (service/migrations).
# The code stays owned by root: the service cannot change itself.
RUN pip install . && python -c "import pysequoia, service.app"

USER keydir
WORKDIR /data
# The SQLite default lives in the volume; set KEYDIR_DATABASE_URL for PostgreSQL.
ENV KEYDIR_DATABASE_URL=sqlite:////data/keydir.sqlite3
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["keydir", "serve", "--host", "0.0.0.0", "--port", "8080"]
