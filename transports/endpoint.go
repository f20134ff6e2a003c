package transports

// The default endpoint (the seed's MEM0_WEBHOOK_URL) keeps the names of a
// one-endpoint memhook, so that an upgraded router finds its group's
// pending entries and the retries waiting in Redis; every other endpoint
// gets its own consumer group on the events topic and its own retry
// topic (on Redis a stream and a sorted set of its own).

// DefaultEndpointName is the name of the endpoint of MEM0_WEBHOOK_URL.
const DefaultEndpointName = "default"

// EndpointGroup returns the consumer group of endpoint on the events
// topic: base (Config.RedisGroup, "memhook") for the default endpoint,
// base + ".endpoint." + endpoint for another.
func EndpointGroup(base, endpoint string) string {
	if endpoint == DefaultEndpointName {
		return base
	}
	return base + ".endpoint." + endpoint
}

// EndpointRetryTopic returns the topic the retries of endpoint come back
// on when due: DefaultRetryTopic for the default endpoint,
// DefaultRetryTopic + "." + endpoint for another.
func EndpointRetryTopic(endpoint string) string {
	if endpoint == DefaultEndpointName {
		return DefaultRetryTopic
	}
	return DefaultRetryTopic + "." + endpoint
}
