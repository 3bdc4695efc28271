package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/client"
)

// The examples that call a broker compile but do not run, because they need
// one listening on 127.0.0.1:50051 (`go run ./cmd/broker demo` starts one).

func Example() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := c.Acquire(ctx, "erp")
	if err != nil {
		log.Fatal(err)
	}
	// Release returns the session to the pool; SignOut would close it.
	defer func() { _ = lease.Release(context.Background()) }()

	creds := lease.Credentials()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, creds.BaseURL+"/entity/Default/24.200.001/Customer", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Authorization", creds.Authorization())
	for _, cookie := range creds.Cookies {
		req.AddCookie(cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	fmt.Println(resp.Status)
}

func ExampleDial_tls() {
	// With TLS (the default) and an API key. For mutual TLS, pass a
	// tls.Config whose Certificates hold the client certificate to
	// client.WithTLSConfig.
	c, err := client.Dial("localhost:50051", client.WithAPIKey(os.Getenv("ACUBROKER_API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()
}

func ExampleClient_Do() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	var customers []json.RawMessage
	err = c.Do(context.Background(), "erp", func(ctx context.Context, s *client.Lease) error {
		hc := &http.Client{Transport: s.Transport(nil)}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			s.Credentials().BaseURL+"/entity/Default/24.200.001/Customer", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			// A 401 is recorded by the lease's Transport, and Do then
			// releases the lease as token rejected.
			return fmt.Errorf("GET Customer: %s", resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(&customers)
	}, client.WithLeaseTTL(time.Minute))
	if errors.Is(err, client.ErrLeaseLost) {
		log.Printf("the lease was lost (%s); the work may be incomplete", client.Reason(err))
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(customers), "customers")
}

func ExampleClient_Transport() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	// The transport acquires a lease at the first request and releases it
	// after 5s without requests, or at Close.
	tr := c.Transport("erp", nil, client.WithIdleRelease(5*time.Second))
	defer func() { _ = tr.Close() }()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	// The site's URL, as the broker's configuration names it.
	resp, err := hc.Get("https://erp.example.com/Company/entity/Default/24.200.001/Customer")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	fmt.Println(resp.Status)
}

func ExampleClient_TokenSource() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	// Cancelling ctx releases the token source's lease.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts := c.TokenSource(ctx, "erp")
	hc := &http.Client{Transport: &oauth2.Transport{Source: ts}}

	resp, err := hc.Get("https://erp.example.com/Company/entity/Default/24.200.001/Customer")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusUnauthorized {
		// The broker signs the session out; the next Token call acquires a
		// new lease.
		_ = ts.ReleaseTokenRejected(ctx)
	}
	fmt.Println(resp.Status)
}

func ExampleReason() {
	// An error as the broker sends it when no seat frees up in time.
	st, _ := status.New(codes.ResourceExhausted, `all 2 seats of connection "erp" stayed in use`).WithDetails(
		&errdetails.ErrorInfo{Reason: "NO_SEAT_AVAILABLE", Domain: "acubroker"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)},
	)
	err := fmt.Errorf("acquire: %w", st.Err())

	fmt.Println(client.Reason(err))
	fmt.Println(client.RetryDelay(err))
	// Output:
	// NO_SEAT_AVAILABLE
	// 1s
}
