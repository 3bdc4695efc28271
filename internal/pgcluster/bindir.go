package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverBinaries are the programs a cluster needs. pg_ctl starts postgres from its own directory,
// so all three must sit together.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// debianBinGlob matches the per-version directories of Debian's postgresql-NN packages.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// BinDir returns the directory that holds the PostgreSQL server binaries (initdb, pg_ctl and
// postgres). It searches, in order:
//
//  1. the PG_BINDIR environment variable, which is used alone when set;
//  2. the output of `pg_config --bindir`;
//  3. the newest /usr/lib/postgresql/VERSION/bin (Debian and Ubuntu packages);
//  4. the directory of initdb found in PATH.
//
// scripts/ensure-postgres.sh searches in the same order.
func BinDir() (string, error) {
	if dir, ok := os.LookupEnv("PG_BINDIR"); ok && dir != "" {
		if missing := missingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("PG_BINDIR=%s does not contain %s: point PG_BINDIR at the "+
				"directory that holds initdb, pg_ctl and postgres, or unset it", dir, strings.Join(missing, ", "))
		}
		return dir, nil
	}

	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		// libpq-dev ships a pg_config too, so the directory it names may hold only client programs.
		if dir != "" && len(missingBinaries(dir)) == 0 {
			return dir, nil
		}
	}

	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}

	if initdb, err := exec.LookPath("initdb"); err == nil {
		if resolved, err := filepath.EvalSymlinks(initdb); err == nil {
			initdb = resolved
		}
		dir := filepath.Dir(initdb)
		if len(missingBinaries(dir)) == 0 {
			return dir, nil
		}
	}

	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in " +
		"PG_BINDIR, `pg_config --bindir`, " + debianBinGlob + " or PATH: install the PostgreSQL " +
		"server package (apt-get install postgresql, or run scripts/ensure-postgres.sh), " +
		"or set PG_BINDIR to the directory that holds them")
}

// missingBinaries returns the names of the server binaries that dir lacks or cannot execute.
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range serverBinaries {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// newestDebianBinDir returns the complete /usr/lib/postgresql/VERSION/bin with the highest major
// version, or "" when there is none.
func newestDebianBinDir() string {
	dirs, err := filepath.Glob(debianBinGlob)
	if err != nil {
		return ""
	}
	type candidate struct {
		dir     string
		version float64
	}
	var candidates []candidate
	for _, dir := range dirs {
		// Versions are "15" or, before PostgreSQL 10, "9.6".
		version, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil || len(missingBinaries(dir)) > 0 {
			continue
		}
		candidates = append(candidates, candidate{dir: dir, version: version})
	}
	if len(candidates) == 0 {
		return ""
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].version > candidates[j].version })
	return candidates[0].dir
}
