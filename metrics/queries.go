package metrics

// The seat collector's queries. They run in one batch at every scrape and
// read only primary-key-sized tables: one row per seat, connection and
// waiter.

const seatCountsQuery = `SELECT connection, state, count(*) FROM seats GROUP BY connection, state`

const budgetsQuery = `SELECT name, max_sessions FROM connections`

// waitersQuery leaves out waiters past their expiry: they have given up, and
// the maintenance loop deletes them.
const waitersQuery = `
SELECT connection, count(*), min(enqueued_at)
FROM waiters
WHERE expire_at > $1
GROUP BY connection`

const pendingSignOutsQuery = `
SELECT connection, count(*), max(signout_attempts)
FROM seats
WHERE state = 'signing_out'
GROUP BY connection`
