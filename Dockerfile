# Multi-stage build: compile with the full Rust toolchain, ship only the binary and the catalog on a
# slim Debian base. TLS to Stripe uses rustls with bundled roots, so no OpenSSL or CA package is needed.
FROM rust:1-slim-bookworm AS build
WORKDIR /app
# Dependencies first, so a code change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo "fn main() {}" > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
# The SQL is checked at compile time against the committed query data, without a database.
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY build.rs build.rs
COPY src src
COPY migrations migrations
COPY static static
COPY plans.toml plans.toml
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /app entitle
WORKDIR /app
COPY --from=build /app/target/release/entitle /usr/local/bin/entitle
COPY plans.toml plans.toml
USER entitle
ENV BIND_ADDR=0.0.0.0:3000
EXPOSE 3000
# No curl in a slim image: ask /healthz over bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["entitle"]
