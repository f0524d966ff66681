# wombatfs as a container image: the daemon for a sidecar or a DaemonSet (mount/sidecar.yaml,
# mount/daemonset.yaml, docs/deploy.md).
#   docker build -t wombatfs .
# Stage 1 builds the release binary; stage 2 is a slim Debian with fuse3 (fusermount3 for the
# preStop unmount) and CA certificates (S3 over TLS).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --locked --bin wombatfs

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 ca-certificates attr \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/wombatfs /usr/local/bin/wombatfs
# the fstab helper, for `mount -t fuse.wombatfs` inside the container
RUN ln -s /usr/local/bin/wombatfs /sbin/mount.fuse.wombatfs
# the mount appears at /kv; the cache dir (flat tier, index, staging) belongs on local NVMe
VOLUME ["/cache"]
EXPOSE 9581
# SIGTERM unmounts cleanly (open files sealed, index checkpointed)
STOPSIGNAL SIGTERM
ENTRYPOINT ["wombatfs"]
CMD ["mount", "/kv", "--cache-dir", "/cache", "--foreground", "-o", "allow_other", "--metrics-addr", "0.0.0.0:9581"]
