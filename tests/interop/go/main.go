// Command interop is a Go client of movies.v1.MovieService: it calls every RPC
// once (and a few error paths) and prints one JSON object per step, for
// tests/test_interop.py to check. It reports what it saw rather than judging
// it, so it exits 0 whenever it could run every step.
//
//	go run ./tests/interop/go -target=localhost:50051 -token=dev-token -id=ID -slow-id=ID [-latitude=44.85 -longitude=-93.24]
//	    [-cacert=ca.pem [-cert=client.pem -key=client.key]]
//
// With -cacert it connects over TLS, trusting that CA; with -cert and -key it
// also presents a client certificate (mTLS).
//
//	go run ./tests/interop/go -balance=ADDR,ADDR,... -service-config=deployments/grpc-service-config.json -id=ID -seconds=N
//
// With -balance it instead balances Gets of -id over those addresses as the
// service config says (round_robin, health checking, retries), from 4
// goroutines for -seconds, and prints one line ("balanced"): the calls made,
// counted by gRPC code.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking, which the service config turns on
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	moviesv1 "github.com/movieservice/movieservice/gen/go/movies/v1"
)

// step is one line of output: its name, the gRPC code and what else it saw.
type step map[string]any

func report(name string, err error, fields step) {
	// The canonical names (DEADLINE_EXCEEDED), as every gRPC implementation
	// spells them; codes.Code's String() gives Go's (DeadlineExceeded).
	out := step{"step": name, "code": code.Code_name[int32(status.Code(err))]}
	if err != nil {
		st := status.Convert(err)
		out["message"] = st.Message()
		// google.rpc.BadRequest travels in the grpc-status-details-bin trailer;
		// status.Details decodes it (errdetails registers the type).
		violations := map[string]string{}
		for _, detail := range st.Details() {
			if bad, ok := detail.(*errdetails.BadRequest); ok {
				for _, v := range bad.GetFieldViolations() {
					violations[v.GetField()] = v.GetDescription()
				}
			}
		}
		if len(violations) > 0 {
			out["field_violations"] = violations
		}
	}
	for k, v := range fields {
		out[k] = v
	}
	line, _ := json.Marshal(out)
	os.Stdout.Write(append(line, '\n'))
}

func movieIDs(movies []*moviesv1.Movie) []string {
	ids := make([]string, 0, len(movies))
	for _, m := range movies {
		ids = append(ids, m.GetId())
	}
	return ids
}

// transportCredentials: plaintext without a CA file, else TLS trusting only
// that CA, with a client certificate when certFile and keyFile are given.
func transportCredentials(caFile, certFile, keyFile string) credentials.TransportCredentials {
	if caFile == "" {
		return insecure.NewCredentials()
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		log.Fatalf("read -cacert: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		log.Fatalf("-cacert %s holds no PEM certificate", caFile)
	}
	config := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			log.Fatalf("load -cert/-key: %v", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config)
}

func main() {
	target := flag.String("target", "localhost:50051", "server address")
	token := flag.String("token", "", "bearer token for Upsert")
	id := flag.String("id", "", "id of an existing movie")
	slowID := flag.String("slow-id", "", "id of an existing movie that is not cached (for the deadline step)")
	latitude := flag.Float64("latitude", 44.85, "Nearby point (default: a theater in the real sample data)")
	longitude := flag.Float64("longitude", -93.24, "Nearby point")
	caFile := flag.String("cacert", "", "connect over TLS, trusting the CA certificates in this PEM file")
	certFile := flag.String("cert", "", "client certificate (PEM) for mTLS")
	keyFile := flag.String("key", "", "the client certificate's private key (PEM)")
	balance := flag.String("balance", "", "balance Gets over these comma-separated addresses instead (see above)")
	serviceConfig := flag.String("service-config", "", "with -balance: the gRPC service config (JSON file)")
	seconds := flag.Float64("seconds", 5, "with -balance: how long to keep calling")
	flag.Parse()
	if *balance != "" {
		balanced(*balance, *serviceConfig, *id, time.Duration(*seconds*float64(time.Second)))
		return
	}
	if *id == "" || *slowID == "" {
		log.Fatal("-id and -slow-id are required")
	}

	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(transportCredentials(*caFile, *certFile, *keyFile)))
	if err != nil {
		log.Fatalf("connect %s: %v", *target, err)
	}
	defer conn.Close()
	client := moviesv1.NewMovieServiceClient(conn)

	// Every step but the deadline one gets a generous deadline of its own.
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}

	ctx, cancel := call()
	got, err := client.Get(ctx, &moviesv1.GetRequest{Id: *id})
	cancel()
	report("get", err, step{"id": got.GetMovie().GetId(), "title": got.GetMovie().GetTitle(), "year": got.GetMovie().GetYear()})

	ctx, cancel = call()
	_, err = client.Get(ctx, &moviesv1.GetRequest{Id: "000000000000000000000000"})
	cancel()
	report("get_not_found", err, nil)

	ctx, cancel = call()
	_, err = client.Get(ctx, &moviesv1.GetRequest{Id: "xyz"})
	cancel()
	report("get_invalid", err, nil)

	movie := &moviesv1.Movie{
		Title:  "Interop from Go",
		Year:   2024,
		Genres: []string{"Drama"},
		Plot:   proto.String("A movie written by the Go interop client."),
		Imdb:   &moviesv1.Imdb{Rating: proto.Float64(7.1), Votes: proto.Int32(1500)},
	}
	ctx, cancel = call()
	_, err = client.Upsert(ctx, &moviesv1.UpsertRequest{Movie: movie})
	cancel()
	report("upsert_unauthenticated", err, nil)

	ctx, cancel = call()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	upserted, err := client.Upsert(ctx, &moviesv1.UpsertRequest{Movie: movie})
	cancel()
	report("upsert", err, step{
		"created": upserted.GetCreated(), "id": upserted.GetMovie().GetId(), "title": upserted.GetMovie().GetTitle(),
		"imdb_rating": upserted.GetMovie().GetImdb().GetRating(), "lastupdated": upserted.GetMovie().GetLastupdated(),
	})

	ctx, cancel = call()
	page1, err := client.TopRated(ctx, &moviesv1.TopRatedRequest{Genre: "Drama", PageSize: 3})
	cancel()
	report("top_rated", err, step{"ids": movieIDs(page1.GetMovies()), "next_page_token": page1.GetNextPageToken()})

	ctx, cancel = call()
	page2, err := client.TopRated(ctx, &moviesv1.TopRatedRequest{Genre: "Drama", PageSize: 3, PageToken: page1.GetNextPageToken()})
	cancel()
	report("top_rated_page2", err, step{"ids": movieIDs(page2.GetMovies()), "next_page_token": page2.GetNextPageToken()})

	ctx, cancel = call()
	near, err := client.Nearby(ctx, &moviesv1.NearbyRequest{Latitude: *latitude, Longitude: *longitude, RadiusKm: 10})
	cancel()
	theaters := []step{}
	for _, t := range near.GetTheaters() {
		theaters = append(theaters, step{"theater_id": t.GetTheater().GetTheaterId(), "distance_km": t.GetDistanceKm()})
	}
	report("nearby", err, step{"theaters": theaters})

	// The caller makes MongoDB slow and passes an uncached id: the 200 ms
	// deadline, sent to the server as grpc-timeout, must end the call.
	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = client.Get(ctx, &moviesv1.GetRequest{Id: *slowID})
	cancel()
	report("get_deadline", err, step{"elapsed_ms": time.Since(start).Milliseconds()})
}

// balanced calls Get(id) over every address in addresses (comma-separated),
// as the service config in configFile says, from 4 goroutines for duration.
// The addresses come from a resolver of this program's own (gRPC's manual
// one), as a DNS name with one record per instance would give them.
func balanced(addresses, configFile, id string, duration time.Duration) {
	config, err := os.ReadFile(configFile)
	if err != nil {
		log.Fatalf("read -service-config: %v", err)
	}
	var endpoints []resolver.Address
	for _, address := range strings.Split(addresses, ",") {
		endpoints = append(endpoints, resolver.Address{Addr: address})
	}
	instances := manual.NewBuilderWithScheme("instances")
	instances.InitialState(resolver.State{Addresses: endpoints})
	conn, err := grpc.NewClient(
		instances.Scheme()+":///movieservice",
		grpc.WithResolvers(instances),
		grpc.WithDefaultServiceConfig(string(config)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	client := moviesv1.NewMovieServiceClient(conn)

	var mu sync.Mutex
	counts := map[string]int{}
	var callers sync.WaitGroup
	stop := time.Now().Add(duration)
	for range 4 {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Get(ctx, &moviesv1.GetRequest{Id: id})
				cancel()
				mu.Lock()
				counts[code.Code_name[int32(status.Code(err))]]++
				mu.Unlock()
			}
		}()
	}
	callers.Wait()
	report("balanced", nil, step{"codes": counts})
}
