package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names of Hugging Face checkpoints.
const (
	// SingleName is the checkpoint of an unsharded model.
	SingleName = "model.safetensors"
	// IndexName lists the shards of a sharded checkpoint.
	IndexName = "model.safetensors.index.json"
)

// Index is a parsed model.safetensors.index.json: which shard file holds
// each tensor.
type Index struct {
	TotalSize int64             // metadata.total_size, when given
	WeightMap map[string]string // tensor name -> shard file name
}

// Shards returns the shard file names, sorted.
func (x *Index) Shards() []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range x.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// ParseIndex parses and validates an index file. Shard names must be plain
// file names ending in .safetensors: an index never points outside its
// directory.
func ParseIndex(b []byte) (*Index, error) {
	var raw struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrMalformed, err)
	}
	if len(raw.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: index has no weight_map entries", ErrMalformed)
	}
	x := &Index{WeightMap: raw.WeightMap}
	if v, ok := raw.Metadata["total_size"].(float64); ok && v >= 0 {
		x.TotalSize = int64(v)
	}
	for name, shard := range raw.WeightMap {
		if !validShardName(shard) {
			return nil, fmt.Errorf("%w: index maps tensor %q to %q, which is not a .safetensors file name in the same directory", ErrMalformed, name, shard)
		}
	}
	return x, nil
}

func validShardName(s string) bool {
	return strings.HasSuffix(s, ".safetensors") && s != ".safetensors" &&
		!strings.ContainsAny(s, `/\`) && s != "." && s != ".." && !strings.HasPrefix(s, "..")
}

// Checkpoint is a model's tensors across one or more safetensors files.
type Checkpoint struct {
	// Dir is the directory holding the files (and config.json, tokenizer.json).
	Dir   string
	Files []*File

	tensors map[string]tensorRef
}

type tensorRef struct {
	file *File
	info *TensorInfo
}

// Locate finds the checkpoint at path: a directory (holding an index,
// model.safetensors or a single .safetensors file), a .safetensors file or
// an index file. It returns the directory and the path of the index or the
// single file, without opening them.
func Locate(path string) (dir, file string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if !st.IsDir() {
		return filepath.Dir(path), path, nil
	}
	for _, name := range []string{IndexName, SingleName} {
		p := filepath.Join(path, name)
		if _, err := os.Stat(p); err == nil {
			return path, p, nil
		}
	}
	matches, _ := filepath.Glob(filepath.Join(path, "*.safetensors"))
	switch len(matches) {
	case 0:
		return "", "", fmt.Errorf("%w: %s holds neither %s, %s nor any .safetensors file", ErrNotFound, path, IndexName, SingleName)
	case 1:
		return path, matches[0], nil
	default:
		names := make([]string, len(matches))
		for i, m := range matches {
			names[i] = filepath.Base(m)
		}
		return "", "", fmt.Errorf("%w: %s holds %d .safetensors files (%s) but no %s to say how they fit together", ErrNotFound, path, len(matches), strings.Join(names, ", "), IndexName)
	}
}

// OpenCheckpoint maps the checkpoint at path (see Locate). For a sharded
// checkpoint every shard is opened and every tensor of the index must be
// in the shard the index names; a tensor in two shards is an error.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	dir, file, err := Locate(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: dir, tensors: map[string]tensorRef{}}
	if !strings.HasSuffix(file, ".json") {
		f, err := Open(file)
		if err != nil {
			return nil, err
		}
		c.Files = []*File{f}
		for i := range f.Tensors {
			c.tensors[f.Tensors[i].Name] = tensorRef{f, &f.Tensors[i]}
		}
		return c, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	x, err := ParseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	byShard := map[string]*File{}
	for _, shard := range x.Shards() {
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			c.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: shard %s listed in %s is missing", ErrNotFound, shard, file)
			}
			return nil, err
		}
		c.Files = append(c.Files, f)
		byShard[shard] = f
	}
	for _, shard := range x.Shards() {
		f := byShard[shard]
		for i := range f.Tensors {
			t := &f.Tensors[i]
			if prev, dup := c.tensors[t.Name]; dup {
				c.Close()
				return nil, fmt.Errorf("%w: tensor %q is in both %s and %s", ErrMalformed, t.Name, filepath.Base(prev.file.Path), shard)
			}
			c.tensors[t.Name] = tensorRef{f, t}
		}
	}
	for name, shard := range x.WeightMap {
		ref, ok := c.tensors[name]
		if !ok || ref.file != byShard[shard] {
			c.Close()
			return nil, fmt.Errorf("%w: %s maps tensor %q to %s, which does not hold it", ErrMalformed, file, name, shard)
		}
	}
	return c, nil
}

// Tensor returns the named tensor's description and bytes.
func (c *Checkpoint) Tensor(name string) (*TensorInfo, []byte, bool) {
	r, ok := c.tensors[name]
	if !ok {
		return nil, nil, false
	}
	return r.info, r.file.data[r.file.DataOffset+r.info.Begin : r.file.DataOffset+r.info.End], true
}

// Names returns every tensor name, sorted.
func (c *Checkpoint) Names() []string {
	out := make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Mapped returns the files' bytes (their memory maps).
func (c *Checkpoint) Mapped() [][]byte {
	out := make([][]byte, len(c.Files))
	for i, f := range c.Files {
		out[i] = f.Bytes()
	}
	return out
}

// Size is the total size of the files in bytes.
func (c *Checkpoint) Size() int64 {
	var n int64
	for _, f := range c.Files {
		n += int64(len(f.data))
	}
	return n
}

// Close unmaps every file.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.Files {
		errs = append(errs, f.Close())
	}
	c.Files, c.tensors = nil, nil
	return errors.Join(errs...)
}
