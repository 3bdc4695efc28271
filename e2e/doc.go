// Package e2e holds end-to-end tests of the broker: the seat-safety rules
// over real gRPC, Postgres and the emulator, several broker processes on one
// database, and a fault test that kills brokers and restarts Postgres.
package e2e
