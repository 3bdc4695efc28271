// Package bench measures how many services one broker can serve, what it
// adds to each call, and whether it wastes sign-ins. cmd/brokerbench runs
// it; docs/benchmarks.md lists the scenarios, the commands and the latest
// figures.
//
// Each scenario starts what it needs on 127.0.0.1: a database on one
// PostgreSQL server (a throwaway cluster unless Config.AdminURL names
// one), an in-process Acumatica emulator, and brokers as `broker serve`
// processes or in process. Figures are reported as ratios to limits
// measured in the same run on the same server, because absolute times on
// small shared machines vary from run to run:
//
//   - throughput: C callers loop acquire and release with no hold, with
//     enough seats that nobody waits, beside the ceiling: C clients that
//     run the two single-row update transactions a cycle needs at least.
//   - contention: many callers that hold each lease for a while share a
//     few seats; the longest wait is compared with the fair wait.
//   - handoff: a release on one replica while the waiter waits on another,
//     beside a raw LISTEN/NOTIFY round trip.
//   - reuse: many acquires over more than a token lifetime on the
//     emulator's clock count the sign-ins and refreshes.
//   - scale: acquire latency and broker memory with one connection and
//     with many, every seat holding a session.
//
// Every loop is bounded in count or time and stops by itself.
package bench
