package brokertest

import (
	"net/http"
	"time"
)

// httpClientWithTimeout bounds every emulator call of a test broker, so
// that an injected drop or delay cannot hang a test.
var httpClientWithTimeout = http.Client{Timeout: 5 * time.Second}
