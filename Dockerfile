# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, ship only the binary on a
# slim Debian runtime, running as an unprivileged user.
#
#   docker build -t gerdu .
#   docker run --rm -p 8080:8080 gerdu -capacity 1GB

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gerdu \
 && cp target/release/gerdu /usr/local/bin/gerdu

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gerdu \
 && mkdir -p /etc/gerdu /var/lib/gerdu && chown gerdu /var/lib/gerdu
COPY --from=build /usr/local/bin/gerdu /usr/local/bin/gerdu
COPY gerdu.toml /etc/gerdu/gerdu.toml
# Listen on every interface inside the container; the file's 127.0.0.1 would be unreachable.
ENV GERDU_CONFIG=/etc/gerdu/gerdu.toml \
    GERDU_HOST=0.0.0.0
USER gerdu
# HTTP, gRPC, Redis, memcached, raft
EXPOSE 8080 8081 6379 11211 12000
ENTRYPOINT ["/usr/local/bin/gerdu"]
