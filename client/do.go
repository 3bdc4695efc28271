package client

import (
	"context"
	"errors"
)

// Do acquires a lease of connection, runs fn with it and always ends the
// lease, also when fn returns an error, panics or calls runtime.Goexit.
//
// fn's context is cancelled when ctx is, and when the lease ends early:
// when it is lost, context.Cause returns the *LeaseLostError, and when
// Client.Close releases it, ErrLeaseEnded. Use the lease's Transport, or
// its Credentials for each request, and stop when the context is done.
//
// After fn returns, Do releases the lease to the broker's pool. It releases
// with reason RELEASE_REASON_TOKEN_REJECTED instead, so that the broker
// signs the session out, when fn's error wraps ErrTokenRejected or a
// request through the lease's Transport got 401.
//
// Do returns fn's error, joined with the release error when releasing
// failed. When the lease was lost it returns the *LeaseLostError, joined
// with fn's error unless that is only the context's cancellation. After a
// panic the release error is logged and the panic continues.
func (c *Client) Do(ctx context.Context, connection string, fn func(ctx context.Context, s *Lease) error, opts ...AcquireOption) error {
	lease, err := c.Acquire(ctx, connection, opts...)
	if err != nil {
		return err
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-lease.Done():
			cancel(lease.Err())
		case <-fnCtx.Done():
		}
	}()

	completed := false
	defer func() {
		if !completed {
			if err := c.endDo(ctx, lease, nil); err != nil && !errors.Is(err, ErrLeaseLost) {
				c.logger.WarnContext(ctx, "releasing the lease after fn panicked failed", "lease_id", lease.ID(),
					"connection", connection, "err", err)
			}
		}
	}()
	fnErr := fn(fnCtx, lease)
	completed = true
	return c.endDo(ctx, lease, fnErr)
}

// endDo ends the lease of a Do call and returns Do's result.
func (c *Client) endDo(ctx context.Context, lease *Lease, fnErr error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()

	var lost *LeaseLostError
	if errors.As(lease.Err(), &lost) {
		// A lease the broker ended needs no call; one that ran out on the
		// client's clock may still hold its seat.
		_ = lease.Release(ctx)
		if fnErr == nil || errors.Is(fnErr, context.Canceled) || errors.Is(fnErr, ErrLeaseLost) {
			return lost
		}
		return errors.Join(lost, fnErr)
	}

	var err error
	if errors.Is(fnErr, ErrTokenRejected) {
		err = lease.ReleaseTokenRejected(ctx)
	} else {
		err = lease.Release(ctx)
	}
	if err == nil {
		return fnErr
	}
	return errors.Join(fnErr, err)
}
