package safetensors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// parseJSONHeader decodes the header object token by token, so that
// duplicate keys, unknown fields in a tensor entry and values of the wrong
// JSON type are refused instead of silently resolved.
func parseJSONHeader(b []byte) (*Header, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrMalformed)
	}
	if b[0] != '{' {
		return nil, fmt.Errorf("%w: header does not start with '{'", ErrMalformed)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	h := &Header{}
	if err := expectDelim(d, '{', "header"); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for d.More() {
		key, err := stringToken(d, "header key")
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, fmt.Errorf("%w: key %q appears twice in the header", ErrMalformed, key)
		}
		seen[key] = true
		if key == "__metadata__" {
			if h.Metadata, err = parseMetadata(d); err != nil {
				return nil, err
			}
			continue
		}
		t, err := parseTensorEntry(d, key)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if err := expectDelim(d, '}', "header"); err != nil {
		return nil, err
	}
	// Only whitespace (the format pads headers with spaces) may follow.
	if rest := b[d.InputOffset():]; len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: data after the header object", ErrMalformed)
	}
	return h, nil
}

func syntaxErr(what string, err error) error {
	if err == io.EOF {
		return fmt.Errorf("%w: header JSON ends inside %s", ErrMalformed, what)
	}
	return fmt.Errorf("%w: header JSON in %s: %v", ErrMalformed, what, err)
}

func expectDelim(d *json.Decoder, want json.Delim, what string) error {
	tok, err := d.Token()
	if err != nil {
		return syntaxErr(what, err)
	}
	if got, ok := tok.(json.Delim); !ok || got != want {
		return fmt.Errorf("%w: %s: want %q, have %v", ErrMalformed, what, want, tok)
	}
	return nil
}

func stringToken(d *json.Decoder, what string) (string, error) {
	tok, err := d.Token()
	if err != nil {
		return "", syntaxErr(what, err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s: want a string, have %v", ErrMalformed, what, tok)
	}
	return s, nil
}

// intToken reads a JSON number that must be a non-negative integer below 2^53.
func intToken(d *json.Decoder, what string) (int64, error) {
	tok, err := d.Token()
	if err != nil {
		return 0, syntaxErr(what, err)
	}
	n, ok := tok.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%w: %s: want an integer, have %v", ErrMalformed, what, tok)
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v < 0 || v > 1<<53 {
		return 0, fmt.Errorf("%w: %s: %s is not an integer in [0, 2^53]", ErrMalformed, what, n)
	}
	return v, nil
}

func parseMetadata(d *json.Decoder) (map[string]string, error) {
	if err := expectDelim(d, '{', "__metadata__"); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for d.More() {
		k, err := stringToken(d, "__metadata__ key")
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: __metadata__ key %q appears twice", ErrMalformed, k)
		}
		v, err := stringToken(d, fmt.Sprintf("__metadata__ value of %q", k))
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, expectDelim(d, '}', "__metadata__")
}

func parseTensorEntry(d *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	what := fmt.Sprintf("tensor %q", name)
	if err := expectDelim(d, '{', what); err != nil {
		return t, err
	}
	var haveDType, haveShape, haveOffsets bool
	for d.More() {
		field, err := stringToken(d, what+" field")
		if err != nil {
			return t, err
		}
		switch field {
		case "dtype":
			if haveDType {
				return t, fmt.Errorf("%w: %s: dtype appears twice", ErrMalformed, what)
			}
			haveDType = true
			s, err := stringToken(d, what+" dtype")
			if err != nil {
				return t, err
			}
			t.DType = DType(s)
			if !t.DType.Known() {
				return t, fmt.Errorf("%w: %s has unknown dtype %q", ErrMalformed, what, s)
			}
		case "shape":
			if haveShape {
				return t, fmt.Errorf("%w: %s: shape appears twice", ErrMalformed, what)
			}
			haveShape = true
			if err := expectDelim(d, '[', what+" shape"); err != nil {
				return t, err
			}
			t.Shape = []int64{}
			for d.More() {
				v, err := intToken(d, what+" shape")
				if err != nil {
					return t, err
				}
				if len(t.Shape) == MaxRank {
					return t, fmt.Errorf("%w: %s has more than %d dimensions", ErrMalformed, what, MaxRank)
				}
				t.Shape = append(t.Shape, v)
			}
			if err := expectDelim(d, ']', what+" shape"); err != nil {
				return t, err
			}
		case "data_offsets":
			if haveOffsets {
				return t, fmt.Errorf("%w: %s: data_offsets appears twice", ErrMalformed, what)
			}
			haveOffsets = true
			if err := expectDelim(d, '[', what+" data_offsets"); err != nil {
				return t, err
			}
			var offs []int64
			for d.More() {
				v, err := intToken(d, what+" data_offsets")
				if err != nil {
					return t, err
				}
				if len(offs) == 2 {
					return t, fmt.Errorf("%w: %s: data_offsets has more than 2 values", ErrMalformed, what)
				}
				offs = append(offs, v)
			}
			if len(offs) != 2 {
				return t, fmt.Errorf("%w: %s: data_offsets has %d values, want [begin, end]", ErrMalformed, what, len(offs))
			}
			if err := expectDelim(d, ']', what+" data_offsets"); err != nil {
				return t, err
			}
			t.Begin, t.End = offs[0], offs[1]
		default:
			return t, fmt.Errorf("%w: %s has unknown field %q", ErrMalformed, what, field)
		}
	}
	if err := expectDelim(d, '}', what); err != nil {
		return t, err
	}
	if !haveDType || !haveShape || !haveOffsets {
		return t, fmt.Errorf("%w: %s needs dtype, shape and data_offsets", ErrMalformed, what)
	}
	if t.End > math.MaxInt64/2 {
		return t, fmt.Errorf("%w: %s: data_offsets out of range", ErrMalformed, what)
	}
	return t, nil
}
