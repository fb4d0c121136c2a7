package testenv

import "net/http"

// CutWriter lets Limit bytes of a response body through, then drops the
// connection (http.ErrAbortHandler: net/http closes it without a log): a
// download cut on the way, for tests of resuming clients.
type CutWriter struct {
	http.ResponseWriter
	Limit int
}

func (c *CutWriter) Write(p []byte) (int, error) {
	if len(p) >= c.Limit {
		c.ResponseWriter.Write(p[:c.Limit])
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.Limit -= len(p)
	return c.ResponseWriter.Write(p)
}
