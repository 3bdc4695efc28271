package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/sealing"
	"github.com/acubroker/acubroker/server"
)

// tlsFlags are the TLS flags of serve.
type tlsFlags struct {
	cert, key, clientCA string
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.cert, "tls-cert", envOr("BROKER_TLS_CERT", ""),
		"PEM file of the gRPC listener's certificate and any intermediates, reloaded when it changes; "+
			"empty serves plaintext (env BROKER_TLS_CERT)")
	fs.StringVar(&f.key, "tls-key", envOr("BROKER_TLS_KEY", ""),
		"PEM file of the certificate's private key, reloaded with it (env BROKER_TLS_KEY)")
	fs.StringVar(&f.clientCA, "tls-client-ca", envOr("BROKER_TLS_CLIENT_CA", ""),
		"PEM file of the CAs that issue client certificates; needed by callers with a certificate_identity "+
			"(env BROKER_TLS_CLIENT_CA)")
}

// security is the TLS, caller authentication and credential encryption of
// a broker. The zero value serves plaintext to anonymous callers and stores
// credentials unencrypted, which serveBroker allows on a loopback listener
// only.
type security struct {
	tls       *tls.Config
	clientCAs *x509.CertPool
	callers   []server.Caller
	sealer    broker.Sealer
}

// newSecurity builds the security of serve from its flags and config file,
// and logs the settings that weaken it.
func newSecurity(flags tlsFlags, file *config.File, logger *slog.Logger) (security, error) {
	var sec security
	switch {
	case flags.cert != "" || flags.key != "":
		var err error
		sec.tls, sec.clientCAs, err = server.NewTLSConfig(server.TLSFiles{
			CertFile:     flags.cert,
			KeyFile:      flags.key,
			ClientCAFile: flags.clientCA,
		}, logger.With("component", "tls"))
		if err != nil {
			return sec, err
		}
	case flags.clientCA != "":
		return sec, errors.New("-tls-client-ca needs TLS: set -tls-cert and -tls-key too")
	}

	for i, c := range file.Callers {
		if c.CertificateIdentity != "" && sec.clientCAs == nil {
			return sec, fmt.Errorf("callers[%d] (%s) has a certificate_identity, but client certificates are not "+
				"verified: set -tls-client-ca (with -tls-cert and -tls-key)", i, c.Name)
		}
		sec.callers = append(sec.callers, serverCaller(c))
	}
	if len(sec.callers) > 0 && sec.tls == nil {
		logger.Warn("callers send their API keys over plaintext; set -tls-cert and -tls-key unless a proxy " +
			"in front of the broker terminates TLS")
	}

	if file.Encryption == nil {
		logger.Warn("session tokens are stored in the database unencrypted; add an encryption section " +
			"to the config (docs/security.md)")
		return sec, nil
	}
	keyring, err := newKeyring(file.Encryption)
	if err != nil {
		return sec, err
	}
	sec.sealer = keyring
	logger.Info("session tokens are encrypted at rest", "active_key", keyring.ActiveKeyID(), "keys", keyring.KeyIDs())
	return sec, nil
}

func serverCaller(c config.Caller) server.Caller {
	roles := make([]server.Role, 0, len(c.Roles))
	for _, r := range c.Roles {
		roles = append(roles, server.Role(r))
	}
	return server.Caller{
		Name:                c.Name,
		APIKeySHA256:        c.APIKeySHA256,
		CertificateIdentity: c.CertificateIdentity,
		Roles:               roles,
		Quotas:              c.Quotas,
	}
}

// newKeyring returns the keyring of the config's encryption section.
func newKeyring(enc *config.Encryption) (*sealing.Keyring, error) {
	keys := make([]sealing.Key, 0, len(enc.Keys))
	for _, k := range enc.Keys {
		keys = append(keys, sealing.Key{ID: k.ID, Secret: k.Secret})
	}
	return sealing.NewKeyring(keys, enc.Active)
}

// quota returns the broker's quota function, nil without callers.
func (s security) quota() func(holder, connection string) int {
	if len(s.callers) == 0 {
		return nil
	}
	return server.CallerQuotas(s.callers)
}

// checkListener returns the error of config.CheckListener: the broker would
// serve anonymous callers on an address other than loopback. When it serves
// them on loopback, it logs a warning to logger unless logger is nil.
func (s security) checkListener(listen string, logger *slog.Logger) error {
	if err := config.CheckListener(listen, len(s.callers)); err != nil {
		return err
	}
	if len(s.callers) > 0 || logger == nil {
		return nil
	}
	logger.Warn("no callers are configured: authentication is off and any local process may acquire, renew "+
		"and release any lease; this is allowed on a loopback address only", "address", listen)
	return nil
}
