package model

import (
	"fmt"
	"strings"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// QuantizeFile writes a copy of the GGUF model in to out with its weight
// matrices converted to type target (Q8_0, Q4_0, Q4_K, ...) by the same
// rules as QuantizeWeights: norms and the router keep their type, matrices
// at or below target's precision are copied, and lower-precision matrices
// are an error. Tensors are converted one at a time while writing, so the
// memory peak is about one tensor. general.file_type is updated.
func QuantizeFile(in, out string, target tensor.DType, pool *tensor.Pool, progress func(done, total int64)) error {
	f, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := ConfigFromGGUF(f); err != nil {
		return err
	}
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		w.Set(kv.Key, kv.Value)
	}
	if ft, ok := fileTypes[target]; ok {
		w.Set("general.file_type", gguf.Uint32(ft))
	}
	var total, done int64
	for _, ti := range f.Tensors {
		total += int64(ti.Size)
	}
	for i := range f.Tensors {
		ti := f.Tensors[i]
		data, _ := f.TensorData(ti.Name)
		typ := ti.Type
		convert := quantizable(ti) && needsConversion(ti.Type, target)
		if quantizable(ti) {
			if err := checkConvertible(ti.Type, target); err != nil {
				return fmt.Errorf("tensor %q: %w", ti.Name, err)
			}
		}
		if convert {
			typ = target
			if _, err := target.RowBytes(int(ti.Dims[0])); err != nil {
				return fmt.Errorf("%w: tensor %q rows of %d cannot be stored as %s", ErrQuantization, ti.Name, ti.Dims[0], target)
			}
		}
		if err := w.AddTensor(ti.Name, typ, ti.Dims, func() ([]byte, error) {
			defer func() {
				done += int64(ti.Size)
				if progress != nil {
					progress(done, total)
				}
			}()
			if !convert {
				return data, nil
			}
			cols := int(ti.Dims[0])
			src, err := tensor.NewMatrix(ti.Type, int(ti.Elements())/cols, cols, data)
			if err != nil {
				return nil, err
			}
			dst, err := convertMatrix(src, target, pool)
			if err != nil {
				return nil, err
			}
			releaseMapped(data, [][]byte{f.Bytes()})
			return dst.Data, nil
		}); err != nil {
			return err
		}
	}
	return w.WriteFile(out)
}

// quantizable reports the tensors a quantizer converts: weight matrices,
// not norms (1-D) and not the MoE router, which llama.cpp keeps in full
// precision too.
func quantizable(ti gguf.TensorInfo) bool {
	return len(ti.Dims) >= 2 && !strings.Contains(ti.Name, "ffn_gate_inp")
}

// fileTypes are llama.cpp's general.file_type values.
var fileTypes = map[tensor.DType]uint32{
	tensor.F32: 0, tensor.F16: 1, tensor.Q4_0: 2, tensor.Q8_0: 7, tensor.Q4_K: 15, tensor.Q6_K: 18, tensor.BF16: 32,
}
