package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLSFiles names the PEM files of the gRPC listener's TLS.
type TLSFiles struct {
	// CertFile holds the server certificate, followed by any intermediate
	// CA certificates. KeyFile holds its private key.
	CertFile string
	KeyFile  string
	// ClientCAFile holds the CA certificates that client certificates must
	// chain to. Empty means the server requests no client certificates.
	ClientCAFile string
}

// NewTLSConfig loads files and returns the listener's TLS config and the
// pool of client CAs (nil without ClientCAFile), which Config.ClientCAs
// takes.
//
// The certificate and key are read again on the first handshake after
// either file's modification time or size changes, so a renewed certificate
// takes effect without a restart. A pair that fails to load, such as a
// certificate written before its key, is logged once and the previous pair
// stays in use. The client CA file is read only here.
//
// The config requests a client certificate but leaves its verification to
// the authentication interceptor (see Config.ClientCAs), which rejects an
// invalid one with UNAUTHENTICATED and a reason.
func NewTLSConfig(files TLSFiles, logger *slog.Logger) (*tls.Config, *x509.CertPool, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, nil, errors.New("TLS needs both a certificate file (-tls-cert) and a key file (-tls-key)")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reloader := &certificateReloader{certFile: files.CertFile, keyFile: files.KeyFile, logger: logger}
	if err := reloader.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: reloader.GetCertificate,
	}
	if files.ClientCAFile == "" {
		return cfg, nil, nil
	}
	pool, err := loadCertPool(files.ClientCAFile)
	if err != nil {
		return nil, nil, err
	}
	// The handshake does not name the accepted CAs (tls.Config.ClientCAs
	// stays nil): clients such as Go's send only a certificate from a named
	// CA, so a caller with a certificate from the wrong CA would be told it
	// sent no credentials instead of why its certificate was rejected.
	cfg.ClientAuth = tls.RequestClientCert
	return cfg, pool, nil
}

func loadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA file %s contains no PEM certificate; it must hold one or more CERTIFICATE blocks", path)
	}
	return pool, nil
}

// fileStamp identifies one version of a file.
type fileStamp struct {
	modTime time.Time
	size    int64
}

func stampOf(path string) (fileStamp, error) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{modTime: info.ModTime(), size: info.Size()}, nil
}

// certificateReloader serves a certificate and key pair from files and
// loads them again when they change.
type certificateReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	// mu guards the fields below.
	mu sync.Mutex
	// cert was loaded from the files when they had the stamps loaded.
	cert   *tls.Certificate
	loaded [2]fileStamp
	// failed are the stamps of the last pair that failed to load, so that
	// each bad version is logged once.
	failed [2]fileStamp
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *certificateReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stamps()
	if err != nil {
		r.logOnce(stamps, "cannot check the TLS certificate files for changes; serving the loaded certificate", err)
		return r.cert, nil
	}
	if stamps == r.loaded || stamps == r.failed {
		return r.cert, nil
	}
	if err := r.loadLocked(stamps); err != nil {
		r.logOnce(stamps, "cannot load the changed TLS certificate; serving the previous one until the files are fixed", err)
		return r.cert, nil
	}
	r.logger.Info("loaded a new TLS certificate", "cert_file", r.certFile, "not_after", r.cert.Leaf.NotAfter)
	return r.cert, nil
}

// load reads the pair for the first time.
func (r *certificateReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stamps()
	if err != nil {
		return fmt.Errorf("read the TLS certificate: %w", err)
	}
	return r.loadLocked(stamps)
}

func (r *certificateReloader) stamps() ([2]fileStamp, error) {
	var stamps [2]fileStamp
	var err error
	if stamps[0], err = stampOf(r.certFile); err != nil {
		return stamps, err
	}
	stamps[1], err = stampOf(r.keyFile)
	return stamps, err
}

// loadLocked loads the pair, which had stamps just before. r.mu must be
// held.
func (r *certificateReloader) loadLocked(stamps [2]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// The error names the files and what is wrong with them, never the key.
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert = &cert
	r.loaded = stamps
	return nil
}

func (r *certificateReloader) logOnce(stamps [2]fileStamp, msg string, err error) {
	if stamps == r.failed {
		return
	}
	r.failed = stamps
	r.logger.Warn(msg, "cert_file", r.certFile, "key_file", r.keyFile, "err", err)
}
