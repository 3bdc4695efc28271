package config

import (
	"strings"
	"testing"
)

func TestCheckListener(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listen  string
		callers int
		wantErr string
	}{
		{"127.0.0.1:50051", 0, ""},
		{"127.0.0.2:0", 0, ""},
		{"[::1]:50051", 0, ""},
		{"0.0.0.0:50051", 0, "without authentication"},
		{":50051", 0, "without authentication"},
		{"[::]:50051", 0, "without authentication"},
		{"192.0.2.10:50051", 0, "without authentication"},
		{"127.0.0.1", 0, "invalid listen address"},
		{"0.0.0.0:50051", 1, ""},
		{":50051", 2, ""},
	}
	for _, tt := range tests {
		err := CheckListener(tt.listen, tt.callers)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("CheckListener(%q, %d) = %v, want nil", tt.listen, tt.callers, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("CheckListener(%q, %d) = %v, want an error containing %q", tt.listen, tt.callers, err, tt.wantErr)
		}
	}
}
