package model_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
)

func TestForwardTopIsTheTopOfTheLogits(t *testing.T) {
	m, err := model.Open(tinyModel(t, nil), model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	V := m.Config.Vocab
	run := func(k int) ([]float32, []model.Candidate, error) {
		c, err := m.NewCache(32, 16)
		if err != nil {
			t.Fatal(err)
		}
		st := m.NewState(8, 32)
		var seq model.Seq
		if err := c.Reserve(&seq, 6); err != nil {
			t.Fatal(err)
		}
		var b model.Batch
		for i, tok := range []int32{1, 300, 301, 302, 303, 304} {
			b.Add(tok, i, &seq, i >= 3)
		}
		if k == 0 {
			l, err := m.Forward(st, c, &b)
			return slices.Clone(l), nil, err
		}
		top, err := m.ForwardTop(st, c, &b, k)
		return nil, slices.Clone(top), err
	}
	logits, _, err := run(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{1, 3, 16} {
		_, top, err := run(k)
		if err != nil {
			t.Fatal(err)
		}
		for r := range 3 {
			row := logits[r*V : (r+1)*V]
			for j := range k {
				c := top[r*k+j]
				if row[c.Token] != c.Logit {
					t.Fatalf("k=%d row %d: candidate %d has logit %g, the row %g", k, r, c.Token, c.Logit, row[c.Token])
				}
				if j > 0 {
					p := top[r*k+j-1]
					if p.Logit < c.Logit || (p.Logit == c.Logit && p.Token > c.Token) {
						t.Fatalf("k=%d row %d: %v before %v", k, r, p, c)
					}
				}
			}
			// nothing outside the top is better than its last
			last := top[r*k+k-1]
			for i, v := range row {
				in := slices.ContainsFunc(top[r*k:(r+1)*k], func(c model.Candidate) bool { return int(c.Token) == i })
				if !in && (v > last.Logit || (v == last.Logit && int32(i) < last.Token)) {
					t.Fatalf("k=%d row %d: token %d (%g) beats the last candidate %v", k, r, i, v, last)
				}
			}
		}
	}
	for _, k := range []int{-1, 17} {
		if _, _, err := run(k); !errors.Is(err, model.ErrBatch) {
			t.Errorf("ForwardTop with k=%d: %v, want ErrBatch", k, err)
		}
	}
}
