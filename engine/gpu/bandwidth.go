package gpu

import (
	"fmt"

	"github.com/moe-operator/moe-operator/engine/gpu/vk"
)

// Bandwidth measures the device's memory bandwidth: it copies a buffer of
// size bytes into another, several times, timed with timestamp queries,
// and returns the bytes read and written per second. It is the ceiling
// that batch-1 decode, which reads every active weight once per token, is
// measured against.
func (d *Device) Bandwidth(size uint64) (float64, error) {
	if d.timers == 0 {
		return 0, fmt.Errorf("gpu: %s has no compute timestamps", d.Info.Name)
	}
	size = min(size, d.info.MaxStorageBuffer, d.limit/3)
	src, err := d.NewBuffer(size, false)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := d.NewBuffer(size, false)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	const reps = 8
	d.mu.Lock()
	defer d.mu.Unlock()
	best := 0.0
	for range 3 {
		err := d.submit(func(c vk.CommandBuffer) {
			c.FillBuffer(src.buf, 0, size, 0x3c003c00)
			c.Barrier(vk.PipelineStageTransfer, vk.PipelineStageTransfer, vk.AccessTransferWrite, vk.AccessTransferRead)
			c.ResetQueries(d.timers, 0, 2)
			c.WriteTimestamp(vk.PipelineStageTransfer, d.timers, 0)
			for range reps {
				c.CopyBuffer(src.buf, dst.buf, 0, 0, size)
			}
			c.WriteTimestamp(vk.PipelineStageTransfer, d.timers, 1)
		})
		if err != nil {
			return 0, err
		}
		var ts [2]uint64
		if err := d.dev.Timestamps(d.timers, ts[:]); err != nil {
			return 0, err
		}
		if secs := float64(ts[1]-ts[0]) * float64(d.info.TimestampPeriod) * 1e-9; secs > 0 {
			best = max(best, float64(2*reps*size)/secs)
		}
	}
	return best, nil
}
