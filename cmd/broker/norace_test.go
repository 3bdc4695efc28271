//go:build !race

package main

// raceEnabled reports whether the test binary has the race detector, so
// that the broker binary a test builds shares its compiled packages.
const raceEnabled = false
