# The worker image used by docker-compose.yml (and by a production orchestrator).
FROM python:3.11-slim-bookworm
WORKDIR /srv/txpipe
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY setup.cfg setup.py requirements.lock README.md ./
COPY app app
COPY agents agents
COPY models models
COPY domain domain
COPY data data
RUN pip install -c requirements.lock .
USER nobody
EXPOSE 6066
CMD ["faust", "-L", "uvloop", "-A", "app.main", "worker", "-l", "info"]
