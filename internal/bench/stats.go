package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarises a sample of durations. Times are in milliseconds.
type Latency struct {
	Count  int     `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// summarize returns the summary of samples; it sorts samples in place.
// Percentiles use the nearest-rank method, so p99.9 of fewer than 1,000
// samples is the maximum.
func summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	return Latency{
		Count:  len(samples),
		MeanMs: ms(total / time.Duration(len(samples))),
		P50Ms:  ms(percentile(samples, 0.50)),
		P99Ms:  ms(percentile(samples, 0.99)),
		P999Ms: ms(percentile(samples, 0.999)),
		MaxMs:  ms(samples[len(samples)-1]),
	}
}

// percentile returns the nearest-rank p-quantile of sorted, which is not
// empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// ms converts d to milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d.Microseconds())) / 1000
}

// ratio returns a/b rounded to three decimals, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// median returns the median of xs, or 0 for none. It sorts a copy.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
