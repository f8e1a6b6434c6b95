# patgate in a container: the gateway and its CLI, as a non-root user.
#
#   docker build -t patgate .
#   docker volume create patgate-data
#   docker run -d --name patgate -p 8080:8080 -v patgate-data:/var/lib/patgate \
#     -v $PWD/gateway.yaml:/etc/patgate/gateway.yaml:ro patgate
#   docker exec patgate patgate user add alice
#   docker exec patgate patgate token create -u alice -q
#
# `patgate serve` is the entry point; the store comes from the config
# (/etc/patgate/gateway.yaml, see deploy/container/gateway.yaml) or from
# PATGATE_STORE, and `docker exec ... patgate` reads the same config and
# store as the server (nothing on the command line overrides them).
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
    && groupadd --system --gid 10001 patgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/patgate \
       --create-home patgate \
    && mkdir -p /etc/patgate \
    && rm -rf /src

COPY deploy/container/gateway.yaml /etc/patgate/gateway.yaml
# A numeric UID, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/patgate
VOLUME /var/lib/patgate
EXPOSE 8080
STOPSIGNAL SIGTERM
# The health check asks the port the config listens on.
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["patgate", "healthcheck"]
ENTRYPOINT ["patgate"]
CMD ["serve"]
