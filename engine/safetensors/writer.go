package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Tensor is a tensor to write. Data returns its bytes when the file is
// written, so files larger than memory can be produced one tensor at a time.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  func() ([]byte, error)
}

func (t *Tensor) size() (int64, error) {
	if !t.DType.Known() {
		return 0, fmt.Errorf("safetensors: tensor %q has unknown dtype %q", t.Name, t.DType)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("safetensors: tensor %q has negative dimension %d", t.Name, d)
		}
		n *= d
	}
	bits := n * int64(t.DType.Bits())
	if bits%8 != 0 {
		return 0, fmt.Errorf("safetensors: tensor %q does not fill whole bytes", t.Name)
	}
	return bits / 8, nil
}

// WriteFile writes tensors, in order, with metadata (may be nil) to path.
// The header is padded with spaces so the data section starts at a
// multiple of 8 bytes. The file is written to a temporary name and renamed.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	header := make(orderedHeader, 0, len(tensors)+1)
	if metadata != nil {
		header = append(header, headerEntry{"__metadata__", metadata})
	}
	var off int64
	seen := map[string]bool{}
	for i := range tensors {
		t := &tensors[i]
		if seen[t.Name] || t.Name == "__metadata__" {
			return fmt.Errorf("safetensors: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		size, err := t.size()
		if err != nil {
			return err
		}
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		header = append(header, headerEntry{t.Name, map[string]any{
			"dtype": t.DType, "shape": shape, "data_offsets": [2]int64{off, off + size},
		}})
		off += size
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for (8+len(hj))%8 != 0 {
		hj = append(hj, ' ')
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 1<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hj)))
	w.Write(n[:])
	w.Write(hj)
	for i := range tensors {
		t := &tensors[i]
		size, _ := t.size()
		data, err := t.Data()
		if err != nil {
			f.Close()
			return fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
		}
		if int64(len(data)) != size {
			f.Close()
			return fmt.Errorf("safetensors: tensor %q: data has %d bytes, its dtype and shape need %d", t.Name, len(data), size)
		}
		if _, err := w.Write(data); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteCheckpoint writes tensors into dir as a Hugging Face checkpoint:
// model.safetensors when they fit in one shard of maxShardBytes (0: no
// limit), otherwise model-0000i-of-0000n.safetensors files and
// model.safetensors.index.json. It returns the files written.
func WriteCheckpoint(dir string, tensors []Tensor, maxShardBytes int64) ([]string, error) {
	var shards [][]Tensor
	var cur []Tensor
	var curSize, total int64
	for _, t := range tensors {
		size, err := t.size()
		if err != nil {
			return nil, err
		}
		total += size
		if maxShardBytes > 0 && len(cur) > 0 && curSize+size > maxShardBytes {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, t)
		curSize += size
	}
	shards = append(shards, cur)
	meta := map[string]string{"format": "pt"}
	if len(shards) == 1 {
		p := filepath.Join(dir, SingleName)
		return []string{p}, WriteFile(p, shards[0], meta)
	}
	var files []string
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		p := filepath.Join(dir, name)
		if err := WriteFile(p, sh, meta); err != nil {
			return nil, err
		}
		files = append(files, p)
		for _, t := range sh {
			weightMap[t.Name] = name
		}
	}
	idx, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, IndexName)
	if err := os.WriteFile(p, append(idx, '\n'), 0o644); err != nil {
		return nil, err
	}
	return append(files, p), nil
}

// orderedHeader marshals as a JSON object keeping its entries' order.
type orderedHeader []headerEntry

type headerEntry struct {
	key   string
	value any
}

func (h orderedHeader) MarshalJSON() ([]byte, error) {
	out := []byte{'{'}
	for i, e := range h {
		if i > 0 {
			out = append(out, ',')
		}
		k, err := json.Marshal(e.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(e.value)
		if err != nil {
			return nil, err
		}
		out = append(append(append(out, k...), ':'), v...)
	}
	return append(out, '}'), nil
}
