// Package migrations embeds the broker's schema changes as numbered SQL
// files. The store package applies them in order and records each applied
// version in the schema_migrations table.
//
// Files are named NNN_name.up.sql. Once released, a file is never edited: a
// change to the schema is a new file with the next number.
package migrations

import "embed"

// FS contains every migration file.
//
//go:embed *.sql
var FS embed.FS
