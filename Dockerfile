# The worker image of docker-compose.yml and deploy/k8s/ (and of any other orchestrator).
# The package is installed as a user installs it (migrations and config are package data) and
# its source removed: the worker imports the installed package, never a source tree in its
# working directory. tests/integration/test_container.py lays this file out without Docker
# and runs it: a file the image needs that these COPY lines miss fails that test.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 APP_DATA_DIR=/var/lib/txpipe
WORKDIR /tmp/txpipe-src
COPY setup.cfg setup.py requirements.lock README.md ./
COPY app app
COPY agents agents
COPY models models
COPY domain domain
RUN pip install -c requirements.lock . && rm -rf /tmp/txpipe-src
WORKDIR /srv/txpipe
# The data directory (tables on RocksDB in prod) belongs to the user the worker runs as;
# compose and the StatefulSet mount a volume per worker on it.
RUN mkdir -p /var/lib/txpipe && chown nobody:nogroup /var/lib/txpipe
USER nobody
EXPOSE 6066
CMD ["faust", "-L", "uvloop", "-A", "app.main", "worker", "-l", "info"]
