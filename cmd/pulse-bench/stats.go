package main

import (
	"math"
	"slices"
	"time"
)

// histogram is a Prometheus histogram's cumulative bucket counts.
type histogram struct {
	bounds     []float64
	cumulative []uint64
	count      uint64
}

// sub returns the observations made between an earlier snapshot and h.
func (h histogram) sub(earlier histogram) histogram {
	out := histogram{bounds: h.bounds, count: h.count - earlier.count}
	for i := range h.cumulative {
		var before uint64
		if i < len(earlier.cumulative) {
			before = earlier.cumulative[i]
		}
		out.cumulative = append(out.cumulative, h.cumulative[i]-before)
	}
	return out
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linear interpolation inside the bucket that contains it. The
// estimate is only as fine as the buckets, which double at every step.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 {
		return math.NaN()
	}
	rank := q * float64(h.count)
	lower, below := 0.0, uint64(0)
	for i, upper := range h.bounds {
		if float64(h.cumulative[i]) >= rank {
			inBucket := h.cumulative[i] - below
			if inBucket == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-float64(below))/float64(inBucket)
		}
		lower, below = upper, h.cumulative[i]
	}
	return math.Inf(1)
}

// percentile returns the q-quantile of samples by the nearest-rank method; it
// sorts samples.
func percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := int(math.Ceil(q*float64(len(samples)))) - 1
	return samples[max(i, 0)]
}

// spread is the minimum, median and maximum of one figure over the runs.
type spread struct {
	min, median, max float64
}

func spreadOf(values []float64) spread {
	if len(values) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	median := v[len(v)/2]
	if len(v)%2 == 0 {
		median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return spread{v[0], median, v[len(v)-1]}
}
