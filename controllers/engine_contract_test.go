package controllers

import (
	"testing"

	"github.com/moe-operator/moe-operator/engine/source"
)

// TestMountPathsMatchTheEngine holds the pod layout to the engine's mount contract. The
// operator does not import the engine (it would carry its download code into the manager
// binary), so the paths are restated and checked here.
func TestMountPathsMatchTheEngine(t *testing.T) {
	if pvcMountRoot != source.PVCMountRoot {
		t.Errorf("pvc:// claims are mounted under %q, the engine reads them under %q", pvcMountRoot, source.PVCMountRoot)
	}
	if modelCacheMountPath != source.CacheMountPath {
		t.Errorf("the model cache is mounted at %q, the engine expects %q", modelCacheMountPath, source.CacheMountPath)
	}
}
