# Builds the broker image, and with --target emulator the Acumatica emulator image.
#
#   docker build -t acubroker/broker .
#   docker build --target emulator -t acubroker/acumatica-emulator .
#
# Both run as the distroless "nonroot" user (uid 65532) on a static binary, with no shell.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO is off so that the binaries run on the static distroless base.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/broker ./cmd/broker \
 && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/acumatica-emulator ./cmd/acumatica-emulator

FROM gcr.io/distroless/static-debian12:nonroot AS emulator
COPY --from=build /out/acumatica-emulator /usr/local/bin/acumatica-emulator
USER nonroot:nonroot
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/acumatica-emulator"]

# The last stage is the default target: the broker.
FROM gcr.io/distroless/static-debian12:nonroot AS broker
COPY --from=build /out/broker /usr/local/bin/broker
USER nonroot:nonroot
# 50051: gRPC (BROKER_LISTEN). 9090: /metrics, /healthz and /readyz (BROKER_METRICS_LISTEN).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/broker"]
CMD ["serve"]
