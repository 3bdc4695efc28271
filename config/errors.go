package config

import (
	"fmt"
	"strings"
)

// FieldError is one broken rule in a config file.
type FieldError struct {
	// Field is the setting's path, such as connections[0].max_sessions.
	Field string
	// Message describes the problem with the value and how to fix it. It never contains a secret.
	Message string
	// Line is the line in the file, or 0 when the setting is missing.
	Line int
}

func (e FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.Field, e.Message, e.Line)
	}
	return e.Field + ": " + e.Message
}

// ValidationError lists every broken rule in a config file, in file order.
type ValidationError struct {
	Errors []FieldError
}

// Error returns one line per broken rule.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}
