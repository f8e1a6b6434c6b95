# patgate in a container: the gateway and its CLI, as a non-root user.
#
#   docker build -t patgate .
#   docker run -p 8080:8080 -e PATGATE_PEPPER=... \
#     -v $PWD/gateway.yaml:/etc/patgate/gateway.yaml -v patgate-data:/var/lib/patgate \
#     patgate
#
# The config must listen on 0.0.0.0 inside the container (--listen below does
# that) and keep its SQLite file under /var/lib/patgate, or use redis://.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATGATE_CONFIG=/etc/patgate/gateway.yaml

WORKDIR /src
# Dependencies from the lock, in their own layer, before the source.
COPY requirements/run.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/run.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --home-dir /var/lib/patgate --create-home patgate \
    && mkdir -p /etc/patgate \
    && rm -rf /src

COPY gateway.yaml /etc/patgate/gateway.yaml
USER patgate
WORKDIR /var/lib/patgate
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/_patgate/healthz', timeout=1)"
ENTRYPOINT ["patgate"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--store", "sqlite:////var/lib/patgate/patgate.db"]
