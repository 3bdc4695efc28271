package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
)

// Defaults of the retry options.
const (
	DefaultMaxAttempts    = 5
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
)

// retryPolicy bounds the retries of one broker call.
type retryPolicy struct {
	maxAttempts    int
	initialBackoff time.Duration
	maxBackoff     time.Duration
}

// retryable reports whether a failed call may be sent again, and the delay
// the broker asked for (0 when it gave none). UNAVAILABLE and ABORTED are
// retried; RESOURCE_EXHAUSTED only with a RetryInfo, because without one
// the broker does not expect the resource to free up. Every other code,
// INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION and PERMISSION_DENIED
// among them, is final, and so is a lease that has already ended.
func retryable(err error) (time.Duration, bool) {
	if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrLeaseEnded) {
		return 0, false
	}
	delay := RetryDelay(err)
	switch code(err) {
	case codes.Unavailable, codes.Aborted:
		return delay, true
	case codes.ResourceExhausted:
		return delay, delay > 0
	}
	return 0, false
}

// wait returns how long to wait before attempt+1. A delay from the broker is
// used as given plus up to 10% jitter, so that callers given the same delay
// do not return at once. Otherwise the backoff doubles from initialBackoff up
// to maxBackoff and a random half of it is waited ("equal jitter").
func (p retryPolicy) wait(attempt int, brokerDelay time.Duration) time.Duration {
	if brokerDelay > 0 {
		return brokerDelay + jitter(brokerDelay/10)
	}
	d := p.initialBackoff
	for i := 1; i < attempt && d < p.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.maxBackoff)
	return d/2 + jitter(d/2)
}

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// retry runs call until it succeeds, fails with an error that retrying does
// not help, has run maxAttempts times, or ctx would end before the next
// attempt. It returns the last error.
func (c *Client) retry(ctx context.Context, method string, call func(ctx context.Context, attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := call(ctx, attempt)
		if err == nil {
			return nil
		}
		delay, ok := retryable(err)
		if !ok || attempt >= c.retries.maxAttempts || ctx.Err() != nil {
			return err
		}
		wait := c.retries.wait(attempt, delay)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return err
		}
		c.logger.InfoContext(ctx, "broker call failed; retrying", "method", method, "attempt", attempt,
			"retry_in", wait, "code", code(err).String(), "reason", Reason(err))
		if !sleep(ctx, wait) {
			return err
		}
	}
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
