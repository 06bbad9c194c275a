package etcdtest

import (
	"testing"
)

func TestClusterElectsLeaderAndSurvivesRestart(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader reported by a healthy cluster")
	}
	m := c.Members[(leader+1)%3]
	m.Kill()
	if err := m.health(); err == nil {
		t.Fatal("a killed member still answers")
	}
	m.Restart()
}
