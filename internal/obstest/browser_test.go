package obstest_test

import (
	"context"
	"errors"
	"html"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chromiumTimeout bounds one run of headless Chromium.
const chromiumTimeout = 90 * time.Second

// dumpDOM loads pageURL in headless Chromium, lets its scripts run for up to
// 10 s of virtual time, and returns the DOM as HTML. Chromium resolves no
// host name, so a page that links to another host makes no request there.
func dumpDOM(t *testing.T, chromium, pageURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir="+filepath.Join(t.TempDir(), "chromium"),
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--virtual-time-budget=10000",
		"--dump-dom", pageURL,
	)
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("chromium did not finish within %s; stderr:\n%s", chromiumTimeout, stderr.String())
	}
	require.NoErrorf(t, err, "chromium failed; stderr:\n%s", stderr.String())
	return string(out)
}

var (
	rowPattern  = regexp.MustCompile(`(?s)<tr[^>]*>(.*?)</tr>`)
	cellPattern = regexp.MustCompile(`(?s)<t[hd][^>]*>(.*?)</t[hd]>`)
	tagPattern  = regexp.MustCompile(`<[^>]*>`)
)

// tableRows returns the text of each cell of each row of the table whose
// opening tag contains marker.
func tableRows(dom, marker string) [][]string {
	start := strings.Index(dom, marker)
	if start < 0 {
		return nil
	}
	end := strings.Index(dom[start:], "</table>")
	if end < 0 {
		return nil
	}
	var rows [][]string
	for _, row := range rowPattern.FindAllStringSubmatch(dom[start:start+end], -1) {
		var cells []string
		for _, cell := range cellPattern.FindAllStringSubmatch(row[1], -1) {
			cells = append(cells, strings.TrimSpace(html.UnescapeString(tagPattern.ReplaceAllString(cell[1], ""))))
		}
		rows = append(rows, cells)
	}
	return rows
}

// TestBrowserShowsPulseQueue loads /monitoring/ in headless Chromium with
// the admin token as the basic authentication password and checks that the
// rendered console lists the queue "pulse" with its size.
func TestBrowserShowsPulseQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three pulse processes and headless Chromium")
	}
	chromium := requireTool(t, "chromium", "chromium")
	f := startQueueFixture(t, 3)

	page := url.URL{
		Scheme: "http",
		User:   url.UserPassword("sre", f.reg.AdminToken),
		Host:   f.api.HTTPAddr(),
		Path:   "/monitoring/",
	}
	dom := dumpDOM(t, chromium, page.String())

	rows := tableRows(dom, `aria-label="queues overview table"`)
	require.NotEmptyf(t, rows, "the page has no queues table; DOM:\n%s", dom)
	header := rows[0]
	queueCol, sizeCol := indexOf(header, "Queue"), indexOf(header, "Size")
	require.GreaterOrEqualf(t, queueCol, 0, "no Queue column in %v", header)
	require.GreaterOrEqualf(t, sizeCol, 0, "no Size column in %v", header)

	var found bool
	for _, row := range rows[1:] {
		if len(row) > max(queueCol, sizeCol) && row[queueCol] == "pulse" {
			found = true
			require.Equal(t, strconv.Itoa(f.tasks), row[sizeCol], "size of queue pulse")
		}
	}
	require.Truef(t, found, "no row of queue pulse in %v", rows)
}

func indexOf(cells []string, name string) int {
	for i, c := range cells {
		if c == name {
			return i
		}
	}
	return -1
}
