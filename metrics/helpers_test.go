package metrics_test

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/acubroker/acubroker/metrics"
)

// families are metric families by name, gathered or scraped.
type families map[string]*dto.MetricFamily

// gather returns the families of m's registry.
func gather(t *testing.T, m *metrics.Metrics) families {
	t.Helper()
	list, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	fams := families{}
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// scrape fetches url over HTTP and parses the Prometheus text format.
func scrape(t *testing.T, url string) families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", url, err)
	}
	return fams
}

// series returns the series of family name whose labels include labels, or
// nil when there is none.
func (f families) series(t *testing.T, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := f[name]
	if !ok {
		return nil
	}
	for _, m := range fam.GetMetric() {
		if hasLabels(m, labels) {
			return m
		}
	}
	return nil
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	matched := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			matched++
		}
	}
	return matched == len(want)
}

// value returns the value of a counter or gauge series, or -1 when the
// series is missing, so that a missing series fails an equality check.
func (f families) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	m := f.series(t, name, labels)
	switch {
	case m == nil:
		return -1
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// histogram returns the sample count and sum of a histogram series, or -1
// and 0 when the series is missing.
func (f families) histogram(t *testing.T, name string, labels map[string]string) (int, float64) {
	t.Helper()
	m := f.series(t, name, labels)
	if m == nil || m.GetHistogram() == nil {
		return -1, 0
	}
	return int(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
}

func counterValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	return gather(t, m).value(t, name, labels)
}

func histogramValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) (int, float64) {
	t.Helper()
	return gather(t, m).histogram(t, name, labels)
}

func seriesCount(t *testing.T, m *metrics.Metrics, name string) int {
	t.Helper()
	return len(gather(t, m)[name].GetMetric())
}
