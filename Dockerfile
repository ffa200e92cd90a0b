# embd: the embedding-table server, as a container image.
#
#   docker build -t embd .
#   docker run --rm -v "$PWD:/data" embd pack /data/in.npy -o /data/t.emb   # pack with the image
#   docker run -d -p 8080:8080 -v "$PWD:/data:ro" embd                      # serve /data/*.emb
#
# Two stages: the build stage compiles embd on debian:bookworm; the runtime stage is
# debian:bookworm-slim with embd, its three shared libraries and curl (the HEALTHCHECK), so no
# compiler or header reaches the final image. embd runs as an unprivileged user (uid 10001) and
# as PID 1 handles SIGTERM itself: /readyz turns 503, after EMBD_SHUTDOWN_DELAY seconds the
# listener closes, in-flight requests finish, and it exits 0 (docker stop's default 10 s grace
# covers the default 2 s delay plus a drain). deploy/README.md has the rest.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libmicrohttpd-dev libjansson-dev libuv1-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY lib lib
COPY server server
COPY proto proto
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DEMBD_TESTS=OFF -DEMBD_WERROR=ON \
 && cmake --build build -j "$(nproc)" \
 && install -D -s -m 0755 build/embd /out/usr/local/bin/embd \
 && /out/usr/local/bin/embd --version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmicrohttpd12 libjansson4 libuv1 curl \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 embd \
 && useradd --uid 10001 --gid embd --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin embd \
 && install -d -o 10001 -g 10001 -m 0755 /data
COPY --from=build /out/ /
# Serve every *.emb in /data on all interfaces. The healthcheck reads the port from here too:
# move the port with -e EMBD_LISTEN=..., not with --listen.
ENV EMBD_LISTEN=0.0.0.0:8080
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD port="${EMBD_LISTEN##*:}"; curl -fsS -o /dev/null "http://127.0.0.1:${port:-8080}/healthz" || exit 1
ENTRYPOINT ["embd"]
CMD ["serve", "/data"]
