package procstat

import "testing"

func TestParseCPUReadsEachStateOfTheFirstLine(t *testing.T) {
	//             user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 10 50 9999 77 5 3 2 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
	c, err := ParseCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	want := CPU{User: 100 * ClockTick, Nice: 10 * ClockTick, System: 50 * ClockTick, Idle: 9999 * ClockTick,
		IOWait: 77 * ClockTick, IRQ: 5 * ClockTick, SoftIRQ: 3 * ClockTick, Steal: 2 * ClockTick}
	if c != want {
		t.Errorf("parsed %+v, want %+v", c, want)
	}
	if busy := c.Busy(); busy != 170*ClockTick {
		t.Errorf("busy = %v, want %v", busy, 170*ClockTick)
	}
}

func TestParseCPURejectsAStatWithoutItsCPULine(t *testing.T) {
	for _, stat := range []string{"intr 1 2 3\n", "cpu 1 2 3\n", "cpu 1 2 3 x 5 6 7 8\n", ""} {
		if c, err := ParseCPU([]byte(stat)); err == nil {
			t.Errorf("%q parsed as %+v without error", stat, c)
		}
	}
}

func TestReadCPUReadsThisMachine(t *testing.T) {
	c, err := ReadCPU()
	if err != nil {
		t.Fatal(err)
	}
	if c.Busy() <= 0 {
		t.Errorf("this machine's CPU times %+v: want some busy time", c)
	}
}
