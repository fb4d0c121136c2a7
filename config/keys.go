package config

import (
	"fmt"
	"strconv"
	"strings"
)

// keyCodes are the evdev codes (linux/input-event-codes.h) of the keys a
// reset button is usually wired to, and a few a test keyboard can send.
var keyCodes = map[string]int{
	"KEY_ESC": 1, "KEY_R": 19, "KEY_ENTER": 28, "KEY_SPACE": 57,
	"KEY_F1": 59, "KEY_F2": 60, "KEY_F3": 61, "KEY_F4": 62, "KEY_F5": 63, "KEY_F6": 64,
	"KEY_F7": 65, "KEY_F8": 66, "KEY_F9": 67, "KEY_F10": 68, "KEY_F11": 87, "KEY_F12": 88,
	"KEY_POWER": 116, "KEY_SETUP": 141, "KEY_CONFIG": 171, "KEY_RESTART": 0x198,
	"KEY_WPS_BUTTON": 0x211, "KEY_RFKILL": 247, "BTN_0": 0x100, "BTN_1": 0x101,
}

// keyMax is KEY_MAX.
const keyMax = 0x2ff

// KeyCode resolves a key name (KEY_RESTART) or number (408, 0x198).
func KeyCode(name string) (int, error) {
	if c, ok := keyCodes[strings.ToUpper(strings.TrimSpace(name))]; ok {
		return c, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(name), 0, 32)
	if err != nil {
		return 0, fmt.Errorf("unknown key %q (want a name such as KEY_RESTART or KEY_WPS_BUTTON, or a number from linux/input-event-codes.h)", name)
	}
	if n <= 0 || n > keyMax {
		return 0, fmt.Errorf("key code %d is out of range (1 to %d)", n, keyMax)
	}
	return int(n), nil
}
