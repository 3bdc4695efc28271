// Package broker hands out Acumatica API sessions as leases while keeping the
// sessions open at each connection within the connection's seat budget.
//
// The package holds the lease and session logic only. It persists through a
// [Store] (implemented over Postgres by package store) and reaches Acumatica
// through an [ERP] (implemented by package acumatica). It imports neither
// gRPC nor a database driver; package server adapts it to gRPC.
//
// # Seats
//
// Every connection has max_sessions seats, one Store row each. A session
// lives in exactly one seat from before its sign-in request is sent until
// Acumatica confirms its sign-out, so the sessions the broker may have open
// at Acumatica never outnumber the seats, however many broker replicas share
// the store. A seat moves through these states:
//
//	          claim                 sign-in ok            release
//	empty ───────────► signing_in ─────────────► leased ◄──────────► idle
//	  ▲                    │                       │    acquire        │
//	  │  sign-in refused,  │                       │ sign out, retire  │ idle sign-out
//	  │  or reclaim_at     │                       ▼                   │
//	  └────────────────────┴────────────────── signing_out ◄───────────┘
//	                           confirmed, or reclaim_at
//
// A sign-in whose outcome is unknown (the request was sent but no response came
// back, or the broker died before recording it) leaves the seat in
// signing_in until reclaim_at, when any session it may have opened has timed
// out at Acumatica. A sign-out that Acumatica did not confirm leaves the seat
// in signing_out, retried with backoff, until it is confirmed or reclaim_at
// passes.
//
// # Leases and waiting
//
// Acquire takes an idle (warm) session when one exists and nobody waits,
// else claims an empty seat and signs in, else queues. The queue lives in the
// store, so waiters are served oldest first whichever replica they called: a
// freed seat goes to the oldest waiter in the same transaction that frees it,
// and the store's notifications wake the waiter's replica.
//
// # Time
//
// Lease expiry, token expiry and Acumatica's idle timeout are judged by the
// broker's [Clock], passed to the store as an explicit now, so tests can move
// time. Replicas must have synchronised clocks; skew shortens or lengthens
// leases by the same amount.
package broker
