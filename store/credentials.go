package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/broker"
)

// SQL of key rotation. Seats hold the only stored credentials: connections,
// leases and waiters carry names and ids, never a token or a password.

// listCredentials pages through seats with credentials in primary key order.
const listCredentials = `
SELECT connection, slot, session_id::text, credentials, credentials_key_id FROM seats
WHERE credentials IS NOT NULL AND session_id IS NOT NULL AND (connection, slot) > (@after_connection, @after_slot)
ORDER BY connection, slot
LIMIT @limit`

const credentialsOfSeat = `
SELECT connection, slot, session_id::text, credentials, credentials_key_id FROM seats
WHERE connection = @connection AND slot = @slot AND credentials IS NOT NULL AND session_id IS NOT NULL`

// replaceCredentials swaps a seat's sealed credentials for the same
// credentials sealed under another key, unless the broker changed the seat's
// session or credentials since they were read. updated_at stays: the seat's
// state does not change.
const replaceCredentials = `
UPDATE seats SET credentials = @credentials, credentials_key_id = @key_id
WHERE connection = @connection AND slot = @slot AND session_id = @session_id
	AND credentials = @old_credentials AND credentials_key_id = @old_key_id`

const countCredentialsByKey = `
SELECT credentials_key_id, count(*) FROM seats WHERE credentials IS NOT NULL GROUP BY credentials_key_id`

// SealedCredentials is the sealed credentials value of one seat.
type SealedCredentials struct {
	Connection  string
	Slot        int
	SessionID   string
	Credentials []byte
	KeyID       string
}

// ListCredentials returns up to limit seats that hold credentials, in
// (connection, slot) order, starting after the seat (afterConnection,
// afterSlot). Pass "" and -1 for the first page.
func (s *Store) ListCredentials(ctx context.Context, afterConnection string, afterSlot, limit int) ([]SealedCredentials, error) {
	rows, _ := s.pool.Query(ctx, listCredentials, pgx.NamedArgs{
		"after_connection": afterConnection,
		"after_slot":       afterSlot,
		"limit":            limit,
	})
	list, err := pgx.CollectRows(rows, scanSealedCredentials)
	return list, interpret(err)
}

// ReplaceCredentials stores credentials sealed with keyID in place of old,
// in one statement. It returns false, and changes nothing, when the seat no
// longer holds old: the broker has since refreshed, replaced or signed out
// the session.
func (s *Store) ReplaceCredentials(ctx context.Context, old SealedCredentials, credentials []byte, keyID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, replaceCredentials, pgx.NamedArgs{
		"connection":      old.Connection,
		"slot":            old.Slot,
		"session_id":      old.SessionID,
		"old_credentials": old.Credentials,
		"old_key_id":      old.KeyID,
		"credentials":     credentials,
		"key_id":          keyID,
	})
	if err != nil {
		return false, interpret(err)
	}
	return tag.RowsAffected() == 1, nil
}

// CountCredentialsByKey returns how many seats hold credentials sealed with
// each key id. Key id "" counts values stored without encryption.
func (s *Store) CountCredentialsByKey(ctx context.Context) (map[string]int, error) {
	type keyCount struct {
		KeyID string
		N     int
	}
	rows, _ := s.pool.Query(ctx, countCredentialsByKey)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[keyCount])
	if err != nil {
		return nil, interpret(err)
	}
	counts := make(map[string]int, len(list))
	for _, c := range list {
		counts[c.KeyID] = c.N
	}
	return counts, nil
}

func scanSealedCredentials(row pgx.CollectableRow) (SealedCredentials, error) {
	var c SealedCredentials
	err := row.Scan(&c.Connection, &c.Slot, &c.SessionID, &c.Credentials, &c.KeyID)
	return c, err
}

// ResealResult counts what ResealCredentials did.
type ResealResult struct {
	// Resealed values were opened and sealed again under the active key.
	Resealed int
	// Current values were already sealed under the active key.
	Current int
	// Changed values were rewritten by a broker while being resealed, and
	// kept as the broker wrote them.
	Changed int
	// Failed values could not be opened or sealed. The error that
	// ResealCredentials returns explains why.
	Failed int
	// Remaining counts, by key id, the values not under the active key once
	// the run ended ("" for values stored without encryption). Removing a
	// key that still has values here makes their sessions unusable.
	Remaining map[string]int
}

// resealPageSize is how many seats ResealCredentials reads at once.
const resealPageSize = 100

// resealAttempts bounds the attempts at one seat that a broker keeps
// rewriting.
const resealAttempts = 3

// ResealCredentials seals every stored credentials value under sealer's
// active key, activeKeyID, while brokers keep serving. Each value is
// replaced in its own statement, only if the seat still holds what was read,
// so a value that a broker rewrites meanwhile is never overwritten with a
// stale one. Values already under activeKeyID are left alone, which makes a
// second run cheap.
//
// The error lists the values that failed by connection, slot and key id,
// never by contents. The result is complete either way.
func (s *Store) ResealCredentials(ctx context.Context, sealer broker.Sealer, activeKeyID string) (ResealResult, error) {
	var (
		result ResealResult
		errs   []error
	)
	afterConnection, afterSlot := "", -1
	for {
		page, err := s.ListCredentials(ctx, afterConnection, afterSlot, resealPageSize)
		if err != nil {
			return result, fmt.Errorf("list stored credentials: %w", err)
		}
		for _, value := range page {
			if err := s.resealOne(ctx, sealer, activeKeyID, value, &result); err != nil {
				if ctx.Err() != nil {
					return result, ctx.Err()
				}
				result.Failed++
				errs = append(errs, err)
			}
		}
		if len(page) < resealPageSize {
			break
		}
		last := page[len(page)-1]
		afterConnection, afterSlot = last.Connection, last.Slot
	}
	remaining, err := s.CountCredentialsByKey(ctx)
	if err != nil {
		return result, fmt.Errorf("count stored credentials by key: %w", err)
	}
	delete(remaining, activeKeyID)
	result.Remaining = remaining
	return result, joinResealErrors(errs)
}

// resealOne reseals the value of one seat, reading the seat again when a
// broker changed it in between.
func (s *Store) resealOne(ctx context.Context, sealer broker.Sealer, activeKeyID string, value SealedCredentials, result *ResealResult) error {
	for attempt := 1; ; attempt++ {
		if value.KeyID == activeKeyID {
			if attempt == 1 {
				result.Current++
			} else {
				result.Changed++
			}
			return nil
		}
		plain, err := sealer.Open(value.SessionID, value.Credentials, value.KeyID)
		if err != nil {
			return fmt.Errorf("seat %s/%d (key %q): %w", value.Connection, value.Slot, value.KeyID, err)
		}
		sealed, keyID, err := sealer.Seal(value.SessionID, plain)
		if err != nil {
			return fmt.Errorf("seat %s/%d: seal: %w", value.Connection, value.Slot, err)
		}
		if keyID != activeKeyID {
			return fmt.Errorf("seat %s/%d: the sealer used key %q, not the active key %q", value.Connection, value.Slot, keyID, activeKeyID)
		}
		replaced, err := s.ReplaceCredentials(ctx, value, sealed, keyID)
		if err != nil {
			return fmt.Errorf("seat %s/%d: store the re-sealed credentials: %w", value.Connection, value.Slot, err)
		}
		if replaced {
			result.Resealed++
			return nil
		}
		rows, _ := s.pool.Query(ctx, credentialsOfSeat, pgx.NamedArgs{"connection": value.Connection, "slot": value.Slot})
		current, err := pgx.CollectExactlyOneRow(rows, scanSealedCredentials)
		if errors.Is(err, pgx.ErrNoRows) {
			// The session was signed out meanwhile: nothing is left to reseal.
			result.Changed++
			return nil
		}
		if err != nil {
			return fmt.Errorf("seat %s/%d: read again: %w", value.Connection, value.Slot, interpret(err))
		}
		if attempt == resealAttempts {
			return fmt.Errorf("seat %s/%d changed during each of %d attempts; run rotate-keys again", value.Connection, value.Slot, attempt)
		}
		value = current
	}
}

// joinResealErrors joins up to 10 errors and counts the rest.
func joinResealErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	const shown = 10
	lines := make([]string, 0, shown+1)
	for _, err := range errs[:min(len(errs), shown)] {
		lines = append(lines, err.Error())
	}
	if len(errs) > shown {
		lines = append(lines, fmt.Sprintf("and %d more", len(errs)-shown))
	}
	return fmt.Errorf("%d stored credentials could not be re-sealed:\n%s", len(errs), strings.Join(lines, "\n"))
}
