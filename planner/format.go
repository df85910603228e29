package planner

import (
	"fmt"
	"strconv"
	"strings"
)

// gigabytes formats bytes in decimal gigabytes: "93.4 GB".
// whole numbers drop the decimal: "80 GB".
func gigabytes(bytes float64) string {
	s := strconv.FormatFloat(bytes/1e9, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + " GB"
}

// millis formats seconds as milliseconds with a precision that suits the
// magnitude: "7.25 ms", "48.1 ms", "512 ms".
func millis(seconds float64) string {
	ms := seconds * 1e3
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// thousands formats x rounded to an integer with comma separators: "24,322".
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
