package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Listen implements broker.Store. It holds one connection of its own,
// outside the pool, for as long as it runs.
func (s *Store) Listen(ctx context.Context, ready func(), onNotify func(connection string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return interpret(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return interpret(err)
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return interpret(err)
		}
		onNotify(n.Payload)
	}
}
