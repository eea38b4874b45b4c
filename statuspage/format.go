package statuspage

import (
	"fmt"
	"time"
)

// formatBytes is a byte count for a person: decimal units, three digits.
func formatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB", "PB"} {
		f /= unit
		if f < unit || u == "PB" {
			if f < 10 {
				return fmt.Sprintf("%.2f %s", f, u)
			}
			if f < 100 {
				return fmt.Sprintf("%.1f %s", f, u)
			}
			return fmt.Sprintf("%.0f %s", f, u)
		}
	}
	return fmt.Sprintf("%d B", n)
}

func formatRate(bps float64) string {
	if bps < 1 {
		return "0 B/s"
	}
	return formatBytes(int64(bps+0.5)) + "/s"
}

// shortDuration is a duration in its two largest units: "3 d 4 h", "12 min",
// "45 s".
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		if s%60 == 0 {
			return fmt.Sprintf("%d min", s/60)
		}
		return fmt.Sprintf("%d min %d s", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%d h %d min", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%d d %d h", s/86400, s%86400/3600)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 2*time.Second {
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// clock is a time of day in UTC, with the date when it is not today.
func clock(now, t time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05")
	}
	return t.Format("Jan 2 15:04")
}
