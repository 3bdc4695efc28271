package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	// maxMergeDepth bounds nested YAML merge keys (<<), which also stops alias cycles.
	maxMergeDepth = 8

	// maxMergedEntries bounds the entries that merge keys may bring in per Parse, because merge
	// lists of aliases can expand exponentially with nesting.
	maxMergedEntries = 100_000
)

// parser collects the errors and warnings of one Parse call.
type parser struct {
	baseDir   string
	lookupEnv func(string) (string, bool)
	errs      []FieldError
	warnings  []string

	// mergedEntries counts the entries visited through merge keys, against maxMergedEntries.
	mergedEntries int
}

// entry is a key and its value in a YAML mapping.
type entry struct {
	key, value *yaml.Node
}

// present reports whether the key is in the mapping with a value other than null.
func (e entry) present() bool {
	return e.key != nil && !isNull(e.value)
}

// fail records a broken rule. node gives the line, and may be nil.
func (p *parser) fail(field string, node *yaml.Node, format string, args ...any) {
	fe := FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
	if node != nil {
		fe.Line = node.Line
	}
	p.errs = append(p.errs, fe)
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	// yaml.v3 does not produce aliases of aliases, but the bound keeps a malformed tree finite.
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxMergeDepth; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is missing or a YAML null (~, null or an empty value).
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names the kind of a YAML value for error messages without showing the value.
func describe(n *yaml.Node) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a string"
	}
	return "an unsupported YAML value"
}

// plainKey matches keys that a field path can show without quotes.
var plainKey = regexp.MustCompile(`^[A-Za-z0-9_:<-]+$`)

// fieldPath joins a parent path and a key, quoting a key that is empty or has unusual characters.
func fieldPath(parent, key string) string {
	if !plainKey.MatchString(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// mappingFields returns the entries of mapping n by key, with YAML merge keys (<<) applied. It
// reports keys outside known and keys written twice. Keys written in n win over merged ones.
func (p *parser) mappingFields(path string, n *yaml.Node, known []string) map[string]entry {
	fields := make(map[string]entry)
	p.collectEntries(path, resolve(n), known, fields, 0, true)
	return fields
}

// collectEntries adds the entries of mapping n to fields, skipping keys already there. explicit
// is true for the mapping the user wrote at path, where a repeated key is an error, while merged
// mappings only fill the gaps.
func (p *parser) collectEntries(path string, n *yaml.Node, known []string, fields map[string]entry, depth int, explicit bool) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, value := n.Content[i], n.Content[i+1]
		key := resolve(keyNode)
		if key.Kind == yaml.ScalarNode && key.ShortTag() == "!!merge" {
			merges = append(merges, value)
			continue
		}
		if key.Kind != yaml.ScalarNode {
			field := path
			if field == "" {
				field = "(top level)"
			}
			p.fail(field, keyNode, "keys must be plain names, got %s", describe(key))
			continue
		}
		if first, ok := fields[key.Value]; ok {
			// Merged entries are collected after the explicit ones, so a key already present in an
			// explicit mapping was written twice in it.
			if explicit {
				p.fail(fieldPath(path, key.Value), keyNode, "is set twice (first on line %d); remove one", first.key.Line)
			}
			continue
		}
		if !slices.Contains(known, key.Value) {
			p.unknownKey(path, keyNode, known)
			continue
		}
		fields[key.Value] = entry{key: keyNode, value: value}
	}
	for _, merge := range merges {
		p.merge(path, merge, known, fields, depth+1)
	}
}

// merge applies the value of a merge key: a mapping or a list of mappings.
func (p *parser) merge(path string, value *yaml.Node, known []string, fields map[string]entry, depth int) {
	if depth > maxMergeDepth {
		p.fail(fieldPath(path, "<<"), value, "merge keys are nested more than %d deep; flatten them", maxMergeDepth)
		return
	}
	value = resolve(value)
	p.mergedEntries += len(value.Content)
	if p.mergedEntries > maxMergedEntries {
		if p.mergedEntries-len(value.Content) <= maxMergedEntries {
			p.fail(fieldPath(path, "<<"), value, "merge keys expand to more than %d entries; write the settings out instead", maxMergedEntries)
		}
		return
	}
	switch value.Kind {
	case yaml.MappingNode:
		p.collectEntries(path, value, known, fields, depth, false)
	case yaml.SequenceNode:
		for _, item := range value.Content {
			if item := resolve(item); item.Kind == yaml.MappingNode {
				p.collectEntries(path, item, known, fields, depth, false)
			} else {
				p.fail(fieldPath(path, "<<"), item, "a merge list must contain only mappings, got %s", describe(item))
			}
		}
	default:
		p.fail(fieldPath(path, "<<"), value, "a merge key needs a mapping or a list of mappings, got %s", describe(value))
	}
}

// unknownKey reports a key outside known, suggesting the closest known key within two edits.
func (p *parser) unknownKey(path string, keyNode *yaml.Node, known []string) {
	key := resolve(keyNode).Value
	best, bestDistance := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDistance {
			best, bestDistance = k, d
		}
	}
	if best != "" {
		p.fail(fieldPath(path, key), keyNode, "unknown setting; did you mean %s?", best)
		return
	}
	p.fail(fieldPath(path, key), keyNode, "unknown setting; the settings here are %s", strings.Join(known, ", "))
}

// editDistance returns the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	previous := make([]int, len(b)+1)
	current := make([]int, len(b)+1)
	for j := range previous {
		previous[j] = j
	}
	for i := 1; i <= len(a); i++ {
		current[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			current[j] = min(previous[j]+1, current[j-1]+1, previous[j-1]+cost)
		}
		previous, current = current, previous
	}
	return previous[len(b)]
}
