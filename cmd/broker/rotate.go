package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/store"
)

// rotateKeysCommand re-seals every stored credentials value under the
// config's active encryption key while brokers keep serving.
func rotateKeysCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker rotate-keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		logs        logFlags
		configPath  = fs.String("config", envOr("BROKER_CONFIG", ""), "path of the YAML config file with the encryption keys (env BROKER_CONFIG); required")
		databaseURL = fs.String("database-url", envOr("BROKER_DATABASE_URL", ""), "PostgreSQL URL (env BROKER_DATABASE_URL); required")
	)
	logs.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: broker rotate-keys [flags]

Re-encrypts every session token stored in the database under the active key
of the config's encryption section, one row at a time, while brokers keep
serving. Values already under the active key are left alone, so running it
again is cheap. It exits with status 1 while any value remains under another
key; remove an old key from the config only after a run that reports none.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("no config file: set -config or BROKER_CONFIG to the config whose encryption keys to use")
	}
	file, _, err := config.Load(*configPath, os.LookupEnv)
	if err != nil {
		return fmt.Errorf("config %s: %w", *configPath, err)
	}
	if file.Encryption == nil {
		return fmt.Errorf("config %s has no encryption section; add one with the new key active "+
			"and the old keys still listed (docs/security.md)", *configPath)
	}
	keyring, err := newKeyring(file.Encryption)
	if err != nil {
		return err
	}
	pool, err := openPool(ctx, *databaseURL, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	if version, err := store.SchemaVersion(ctx, pool); err != nil || version != store.LatestVersion() {
		return fmt.Errorf("the database schema is at version %d, not %d (err: %v); run broker migrate first",
			version, store.LatestVersion(), err)
	}

	active := keyring.ActiveKeyID()
	result, resealErr := store.New(pool).ResealCredentials(ctx, keyring, active)
	fmt.Fprintf(stdout, "re-encrypted under key %s: %d\n", active, result.Resealed)
	fmt.Fprintf(stdout, "already under key %s: %d\n", active, result.Current)
	fmt.Fprintf(stdout, "rewritten by a broker during the run: %d\n", result.Changed)
	fmt.Fprintf(stdout, "failed: %d\n", result.Failed)
	fmt.Fprintf(stdout, "left under other keys: %s\n", describeKeyCounts(result.Remaining))
	if resealErr != nil {
		return resealErr
	}
	if len(result.Remaining) > 0 {
		return fmt.Errorf("%s values are not under key %s yet; they are written by brokers that still seal with "+
			"another key: give every broker the new config, then run rotate-keys again", describeKeyCounts(result.Remaining), active)
	}
	return nil
}

// describeKeyCounts lists counts by key id, such as "k1: 2, unencrypted: 1".
func describeKeyCounts(counts map[string]int) string {
	if len(counts) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(counts))
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		name := id
		if id == "" {
			name = "unencrypted"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, counts[id]))
	}
	return strings.Join(parts, ", ")
}
