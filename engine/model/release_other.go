//go:build !unix

package model

import "github.com/moe-operator/moe-operator/engine/tensor"

func releaseIfPacked(*tensor.Matrix) {}
