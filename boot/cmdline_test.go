package boot

import (
	"reflect"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		want     Cmdline
		problems int
	}{
		{name: "empty", in: "", want: Cmdline{Params: map[string]string{}}},
		{
			name: "typical",
			in:   "console=ttyS0 panic=-1 rootwait\n",
			want: Cmdline{RootWait: true, Params: map[string]string{"console": "ttyS0", "panic": "-1", "rootwait": ""}},
		},
		{
			name: "init and rootdelay",
			in:   "init=/bin/sh rootdelay=3",
			want: Cmdline{Init: "/bin/sh", RootDelay: 3 * time.Second, Params: map[string]string{"init": "/bin/sh", "rootdelay": "3"}},
		},
		{
			name: "quoted value keeps spaces",
			in:   `foo="a b" bar`,
			want: Cmdline{Params: map[string]string{"foo": "a b", "bar": ""}},
		},
		{
			name: "last one wins",
			in:   "init=/a init=/b",
			want: Cmdline{Init: "/b", Params: map[string]string{"init": "/b"}},
		},
		{
			name:     "relative init ignored",
			in:       "init=sbin/init",
			want:     Cmdline{Params: map[string]string{"init": "sbin/init"}},
			problems: 1,
		},
		{
			name:     "bad rootdelay ignored",
			in:       "rootdelay=soon rootdelay=-2",
			want:     Cmdline{Params: map[string]string{"rootdelay": "-2"}},
			problems: 2,
		},
		{
			name: "factory reset",
			in:   "ovroot.reset=1 ovroot.reset_step_delay=250ms",
			want: Cmdline{Reset: true, ResetStepDelay: 250 * time.Millisecond, Params: map[string]string{"ovroot.reset": "1", "ovroot.reset_step_delay": "250ms"}},
		},
		{
			name: "factory reset as a flag",
			in:   "quiet ovroot.reset",
			want: Cmdline{Reset: true, Params: map[string]string{"quiet": "", "ovroot.reset": ""}},
		},
		{
			name: "factory reset off",
			in:   "ovroot.reset=1 ovroot.reset=0",
			want: Cmdline{Params: map[string]string{"ovroot.reset": "0"}},
		},
		{
			name: "failsafe",
			in:   "ovroot.failsafe=1",
			want: Cmdline{Failsafe: true, Params: map[string]string{"ovroot.failsafe": "1"}},
		},
		{
			name: "ovroot.trace alone turns the timeline marks on",
			in:   "ovroot.trace",
			want: Cmdline{Trace: true, Params: map[string]string{"ovroot.trace": ""}},
		},
		{
			name:     "bad reset values ignored",
			in:       "ovroot.reset=maybe ovroot.reset_step_delay=forever",
			want:     Cmdline{Params: map[string]string{"ovroot.reset": "maybe", "ovroot.reset_step_delay": "forever"}},
			problems: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := parseCmdline(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseCmdline(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if len(problems) != tc.problems {
				t.Errorf("parseCmdline(%q) problems = %q, want %d of them", tc.in, problems, tc.problems)
			}
		})
	}
}

func TestPeakRSS(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   string
		ok     bool
	}{
		{"Name:\tinit\nVmPeak:\t  1000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t 9000 kB\n", "9876 kB", true},
		{"Name:\tinit\n", "", false},
	} {
		got, ok := peakRSS([]byte(tc.status))
		if got != tc.want || ok != tc.ok {
			t.Errorf("peakRSS(%q) = %q, %v; want %q, %v", tc.status, got, ok, tc.want, tc.ok)
		}
	}
}
