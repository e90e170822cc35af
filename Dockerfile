# keydir: `docker build -t keydir .` then
#   docker run -p 8080:8080 -e KEYDIR_DATABASE_URL=postgresql+psycopg://… keydir            (server)
#   docker run -e KEYDIR_DATABASE_URL=… keydir keydir migrate                              (schema)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --home-dir /var/lib/keydir keydir
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
# Editable install: the migrations are found next to the package (service/db/migrate.py).
RUN pip install -e . && python -c "import pysequoia, service.app"

USER keydir
WORKDIR /var/lib/keydir
ENV KEYDIR_DATABASE_URL=sqlite:////var/lib/keydir/keydir.sqlite3
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
CMD ["keydir", "serve", "--host", "0.0.0.0", "--port", "8080"]
