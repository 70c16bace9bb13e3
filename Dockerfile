# syntax=docker/dockerfile:1
# Conveyor: conveyord, conveyor-worker and conveyor on Debian 12.
#
#   docker build -t conveyor .                  # the runtime image
#   docker build --target test .                # the build stage, then scripts/test (what CI runs)
#   docker compose -f deploy/docker-compose.yml up --build
#
# Every build step is a call of the scripts CI runs (scripts/setup installs
# the Debian packages, scripts/build configures and builds with CMake and
# Ninja), so the image holds the binaries CI tested. The runtime stage adds
# only the shared libraries they load (deploy/runtime-packages, checked
# against ldd by tests/deploy/deploy_config_test.py), tini and CA roots.

FROM debian:12 AS build
WORKDIR /src
# setup first and alone, so the package layer is rebuilt only when the
# package list changes.
COPY scripts/setup scripts/setup
RUN ./scripts/setup
COPY . .
RUN ./scripts/build conveyord conveyor-worker conveyor

# Optional: `docker build --target test .` runs the whole suite in the image.
FROM build AS test
RUN ./scripts/test

FROM debian:12-slim AS runtime
COPY deploy/runtime-packages /tmp/runtime-packages
RUN apt-get update -q \
 && sed 's/#.*//' /tmp/runtime-packages | xargs apt-get install -y -q --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
# A fixed uid, so that mounted secrets and volumes can be given to it
# (deploy/gen-certs.sh, the Kubernetes fsGroup).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/conveyor \
      --shell /usr/sbin/nologin conveyor \
 && install -d -o conveyor -g conveyor -m 0700 /var/lib/conveyor
COPY --from=build /src/build/server/conveyord /src/build/worker/conveyor-worker \
     /src/build/client/conveyor /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/conveyor
VOLUME ["/var/lib/conveyor"]
# 7400 gRPC API (conveyord), 7401 its health-only listener (--health-listen),
# 9464 broker /metrics, 9465 worker /metrics.
EXPOSE 7400 7401 9464 9465
# tini runs the command given (conveyord, conveyor-worker or conveyor) as its
# child and passes SIGTERM on: both daemons drain and exit 0 (grace periods:
# conveyord --drain-grace 10s, conveyor-worker --grace 25s).
ENTRYPOINT ["/usr/bin/tini", "--"]
# The broker, on every interface: it refuses to start there without TLS and
# tokens, so mount them (deploy/gen-certs.sh makes them) or pass other flags.
CMD ["conveyord", "--listen=0.0.0.0:7400", "--metrics-addr=0.0.0.0:9464", \
     "--data-dir=/var/lib/conveyor", \
     "--tls-cert=/run/secrets/broker.crt", "--tls-key=/run/secrets/broker.key", \
     "--auth-tokens=/run/secrets/tokens"]
