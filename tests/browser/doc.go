// Package browser holds the dashboard's browser test: a real `memhook
// serve` process and headless Chromium driven over the DevTools protocol
// (chromedp). It is a module of its own so that chromedp stays out of
// memhook's dependencies; .ci/run runs it.
package browser
