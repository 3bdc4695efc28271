// Package metrics exposes the broker's Prometheus metrics.
//
// [New] builds a registry with three kinds of metrics:
//
//   - Gauges read from Postgres at scrape time: seats by state, the seat
//     budget, waiters and the age of the oldest one, and pending sign-outs.
//     The seats table is the truth across replicas, so every replica reports
//     the same values: aggregate them with max, not sum.
//   - Counters and histograms of this replica's events, fed by [Metrics] as
//     the broker's [broker.Observer]: acquires by outcome, acquire wait time,
//     lease hold time, and requests to Acumatica by endpoint and outcome
//     with their latency. Aggregate them with sum.
//   - The gRPC server metrics of go-grpc-middleware's Prometheus provider
//     (grpc_server_*), and the Go runtime and process collectors.
//
// # Metric names
//
//	acubroker_seats{connection,state}                       gauge, from Postgres
//	acubroker_seat_budget{connection}                       gauge, from Postgres (max_sessions)
//	acubroker_waiters{connection}                           gauge, from Postgres
//	acubroker_oldest_waiter_age_seconds{connection}         gauge, from Postgres
//	acubroker_pending_sign_outs{connection}                 gauge, from Postgres (signing_out seats)
//	acubroker_pending_sign_out_attempts_max{connection}     gauge, from Postgres
//	acubroker_store_up                                      gauge, 1 when the last scrape read Postgres
//	acubroker_store_scrape_duration_seconds                 gauge
//	acubroker_acquires_total{connection,outcome}            counter
//	acubroker_acquire_wait_seconds{connection}              histogram
//	acubroker_lease_hold_seconds{connection,state}          histogram
//	acubroker_erp_requests_total{connection,endpoint,outcome} counter
//	acubroker_erp_request_duration_seconds{connection,endpoint} histogram
//
// An acquire's outcome is "ok", the [broker.Reason] of its error (such as
// NO_SEAT_AVAILABLE or ERP_LOGIN_LIMIT), "canceled", "deadline", or
// "internal" for any other error. A request to Acumatica has endpoint
// sign_in, refresh or sign_out, and outcome "ok", login_limit,
// invalid_credentials, invalid_grant, throttled, unavailable, unexpected,
// canceled or error.
//
// Connection names in event metrics come from callers, so only the names in
// [Config.Connections] are used as labels. Any other name is counted as
// "_unknown", a name that no configured connection can have.
package metrics
