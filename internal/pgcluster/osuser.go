package pgcluster

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverOSUser is the unprivileged account that runs initdb and postgres when this process runs
// as root. Debian's postgresql-common package creates it.
const serverOSUser = "postgres"

// osUser is the account that owns a cluster's files and runs its server programs.
type osUser struct {
	name string
	uid  int
	gid  int
}

// lookupServerUser returns nil when this process is not root, because the server programs then run
// as the current user. As root it returns the postgres account, since initdb and postgres refuse
// to run as root. A missing account is an error: creating system users is left to the package
// manager.
func lookupServerUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverOSUser)
	if err != nil {
		return nil, fmt.Errorf("this process runs as root, and initdb and postgres refuse to, but the OS "+
			"user %q that should run them was not found (%v): install the PostgreSQL server package "+
			"(apt-get install postgresql), which creates it, or run as a non-root user", serverOSUser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("OS user %q has a non-numeric uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("OS user %q has a non-numeric gid %q", u.Username, u.Gid)
	}
	return &osUser{name: u.Username, uid: uid, gid: gid}, nil
}

// chown gives path to the server user. It does nothing when the server runs as the current user.
func (u *osUser) chown(path string) error {
	if u == nil {
		return nil
	}
	if err := os.Lchown(path, u.uid, u.gid); err != nil {
		return fmt.Errorf("give %s to OS user %q: %w", path, u.name, err)
	}
	return nil
}

// sysProcAttr returns the attributes that run a child process as the server user, or nil when
// the server runs as the current user.
func (u *osUser) sysProcAttr() *syscall.SysProcAttr {
	if u == nil {
		return nil
	}
	return &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}},
	}
}

// checkTraversable returns an error naming the first directory from dir up to / that the server
// user cannot enter. Directories from t.TempDir() are mode 0700 and owned by root, for example,
// so postgres running as the postgres user could not reach a data directory below them.
func (u *osUser) checkTraversable(dir string) error {
	if u == nil {
		return nil
	}
	for current := dir; ; current = filepath.Dir(current) {
		info, err := os.Stat(current)
		if err != nil {
			return fmt.Errorf("check that OS user %q can enter %s: %w", u.name, current, err)
		}
		if !u.canEnter(info) {
			return fmt.Errorf("OS user %q, which runs postgres because this process is root, cannot enter "+
				"directory %s (mode %v): place the cluster elsewhere (an empty Options.Dir puts it under %s) "+
				"or allow it with chmod o+x %s", u.name, current, info.Mode().Perm(), os.TempDir(), current)
		}
		if parent := filepath.Dir(current); parent == current {
			return nil
		}
	}
}

// canEnter reports whether the user may search the directory described by info. It ignores
// supplementary groups and ACLs, so it can reject a directory that the kernel would allow.
func (u *osUser) canEnter(info fs.FileInfo) bool {
	perm := info.Mode().Perm()
	stat, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return perm&0o001 != 0
	}
	switch {
	case int(stat.Uid) == u.uid:
		return perm&0o100 != 0
	case int(stat.Gid) == u.gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
