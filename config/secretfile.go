package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxSecretFileSize is the largest secret file accepted. Secrets are short, so a larger file is
// almost certainly the wrong path.
const maxSecretFileSize = 64 << 10

// secretFromFile returns the contents of the file at path, relative to the config file's
// directory, without trailing line breaks.
func (p *parser) secretFromFile(field string, node *yaml.Node, path, envKey, label string) string {
	if path == "" {
		p.fail(field, node, "is empty; set it to the path of a file that holds the %s", label)
		return ""
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.baseDir, path)
	}
	data, err := readSecretFile(path)
	if err != nil {
		p.fail(field, node, "%v; fix the path or use %s", err, envKey)
		return ""
	}
	secret := strings.TrimRight(string(data), "\r\n")
	if secret == "" {
		p.fail(field, node, "%s file %s is empty; write the %s into it", label, path, label)
		return ""
	}
	return secret
}

// readSecretFile reads a regular file of at most maxSecretFileSize bytes. Its errors name the path
// but never the contents.
func readSecretFile(path string) ([]byte, error) {
	// Opening a FIFO or reading a device such as /dev/stdin could block, and a directory cannot
	// hold a secret, so check the type before opening.
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, pathErrorCause(err))
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, pathErrorCause(err))
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	if len(data) > maxSecretFileSize {
		return nil, fmt.Errorf("%s is larger than %d KiB, too large for a secret", path, maxSecretFileSize>>10)
	}
	return data, nil
}

// pathErrorCause strips the operation and path from an *fs.PathError, which the caller's message
// already names.
func pathErrorCause(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}
